<?php

declare(strict_types=1);

namespace Phase\Error;

/** A bug, here or in the node (exit 70). */
class InternalError extends PhaseException
{
    public const EXIT_CODE = 70;
    public const SLUG = 'internal';
}
