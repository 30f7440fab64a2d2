<?php

declare(strict_types=1);

namespace Phase\Error;

/** A node or tool answered outside its protocol (exit 76). */
class ProtocolViolation extends PhaseException
{
    public const EXIT_CODE = 76;
    public const SLUG = 'protocol_violation';
}
