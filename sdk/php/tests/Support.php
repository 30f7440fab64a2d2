<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Error\PhaseException;

/** Paths and helpers the tests share. */
final class Support
{
    /** The repository's signed test vectors (tests/vectors), or $PHASE_VECTORS. */
    public static function vectors(): string
    {
        $env = getenv('PHASE_VECTORS');
        return is_string($env) && $env !== '' ? $env : dirname(__DIR__, 3) . '/tests/vectors';
    }

    /** The slug `$fn` throws, or 'ok'. */
    public static function slugOf(callable $fn): string
    {
        try {
            $fn();
            return 'ok';
        } catch (PhaseException $e) {
            return $e->getSlug();
        }
    }
}
