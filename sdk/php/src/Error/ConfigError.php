<?php

declare(strict_types=1);

namespace Phase\Error;

/** A bad keyring, key file or configuration (exit 78). */
class ConfigError extends PhaseException
{
    public const EXIT_CODE = 78;
    public const SLUG = 'bad_config';
}
