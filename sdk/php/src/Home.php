<?php

declare(strict_types=1);

namespace Phase;

/**
 * Where a node's state lives, found the way the Phase tools find it
 * (docs/conventions.md, "State"): an explicit path > `$PHASE_HOME` >
 * `$XDG_DATA_HOME/phase` > `~/.local/share/phase`.
 *
 * The control socket is `<home>/plasmd.sock`; a node in private mode (nothing on
 * disk) listens on the abstract socket `@phase-plasmd-<24 hex of sha256(home)>`.
 */
final class Home
{
    public static function resolve(?string $explicit = null): string
    {
        if ($explicit !== null && $explicit !== '') {
            return $explicit;
        }
        foreach (['PHASE_HOME' => '', 'XDG_DATA_HOME' => '/phase'] as $var => $suffix) {
            $v = getenv($var);
            if (is_string($v) && $v !== '') {
                return $v . $suffix;
            }
        }
        $home = getenv('HOME');
        if (!is_string($home) || $home === '') {
            $home = function_exists('posix_getpwuid') ? (posix_getpwuid(posix_geteuid())['dir'] ?? '/') : '/';
        }
        return rtrim($home, '/') . '/.local/share/phase';
    }

    public static function socketPath(string $home): string
    {
        return rtrim($home, '/') . '/plasmd.sock';
    }

    /** The abstract socket name (with its leading NUL) private mode uses for `$home`. */
    public static function abstractName(string $home): string
    {
        return "\0phase-plasmd-" . substr(hash('sha256', self::absolute($home)), 0, 24);
    }

    public static function keyPath(string $home): string
    {
        return rtrim($home, '/') . '/key';
    }

    public static function casPath(string $home, string $contentId): string
    {
        $h = substr($contentId, 7);
        return rtrim($home, '/') . '/cas/sha256/' . substr($h, 0, 2) . '/' . substr($h, 2);
    }

    /** An absolute path with symlinks resolved where the path exists (as Python's Path.resolve). */
    private static function absolute(string $path): string
    {
        $real = realpath($path);
        if ($real !== false) {
            return $real;
        }
        if (!str_starts_with($path, '/')) {
            $path = getcwd() . '/' . $path;
        }
        $parts = [];
        foreach (explode('/', $path) as $p) {
            if ($p === '' || $p === '.') {
                continue;
            }
            if ($p === '..') {
                array_pop($parts);
                continue;
            }
            $parts[] = $p;
        }
        // The longest existing prefix is resolved, the rest kept as written.
        for ($i = count($parts); $i > 0; $i--) {
            $head = realpath('/' . implode('/', array_slice($parts, 0, $i)));
            if ($head !== false) {
                return rtrim($head, '/') . '/' . implode('/', array_slice($parts, $i));
            }
        }
        return '/' . implode('/', $parts);
    }
}
