<?php

declare(strict_types=1);

namespace Phase\Error;

/** No node, peer or tool could serve the request (exit 69). */
class Unavailable extends PhaseException
{
    public const EXIT_CODE = 69;
    public const SLUG = 'unavailable';
}
