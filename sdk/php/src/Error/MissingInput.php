<?php

declare(strict_types=1);

namespace Phase\Error;

/** A file, key or blob that does not exist, or an input with nothing to act on (exit 66). */
class MissingInput extends PhaseException
{
    public const EXIT_CODE = 66;
    public const SLUG = 'missing_input';
}
