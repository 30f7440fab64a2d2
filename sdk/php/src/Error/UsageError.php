<?php

declare(strict_types=1);

namespace Phase\Error;

/** A call or option the tool does not understand (exit 64). */
class UsageError extends PhaseException
{
    public const EXIT_CODE = 64;
    public const SLUG = 'usage';
}
