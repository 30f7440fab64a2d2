<?php

declare(strict_types=1);

namespace Phase\Error;

/** A temporary failure such as a timeout; a retry may help (exit 75). */
class TempFailure extends PhaseException
{
    public const EXIT_CODE = 75;
    public const SLUG = 'temporary_failure';
}
