<?php

declare(strict_types=1);

namespace Phase\Error;

/** Input that cannot be understood: malformed, too_large, bad_content_id, ... (exit 65). */
class InputError extends PhaseException
{
    public const EXIT_CODE = 65;
    public const SLUG = 'bad_input';
}
