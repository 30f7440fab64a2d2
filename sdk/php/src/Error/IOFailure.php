<?php

declare(strict_types=1);

namespace Phase\Error;

/** A file that cannot be read or written (exit 74). */
class IOFailure extends PhaseException
{
    public const EXIT_CODE = 74;
    public const SLUG = 'io_error';
}
