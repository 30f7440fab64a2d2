<?php

declare(strict_types=1);

namespace Phase\Error;

/** The work was stopped on request (exit 130). */
class Interrupted extends PhaseException
{
    public const EXIT_CODE = 130;
    public const SLUG = 'interrupted';
}
