<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;

/**
 * Declarative body checks, the same rules as phase-core's schema.py and docs/schemas/.
 * A check is `fn (mixed $value, string $where): void` and throws `malformed`.
 * String lengths count characters (code points), as the schemas do.
 *
 * @internal used by Documents
 */
final class Schema
{
    public static function fail(string $where, string $msg): InputError
    {
        return new InputError("{$where}: {$msg}", 'malformed');
    }

    public static function string(int $max = 256, ?string $pattern = null, int $min = 0): \Closure
    {
        return static function (mixed $v, string $where) use ($max, $pattern, $min): void {
            if (!is_string($v)) {
                throw self::fail($where, 'must be a string');
            }
            $len = preg_match_all('/./su', $v);
            if ($len < $min || $len > $max) {
                throw self::fail($where, "length must be {$min}..{$max}");
            }
            if ($pattern !== null && preg_match('~(*UCP)\A(?:' . $pattern . ')\z~u', $v) !== 1) {
                throw self::fail($where, 'does not match ' . $pattern);
            }
        };
    }

    /** A string a process receives through C (argv, environment): no NUL character. */
    public static function cString(int $max = 4096): \Closure
    {
        $inner = self::string($max);
        return static function (mixed $v, string $where) use ($inner): void {
            $inner($v, $where);
            if (str_contains($v, "\0")) {
                throw self::fail($where, 'contains a NUL character; an argument or environment value cannot hold one');
            }
        };
    }

    public static function integer(int $lo = 0, int $hi = Json::MAX_INT): \Closure
    {
        return static function (mixed $v, string $where) use ($lo, $hi): void {
            if (!is_int($v)) {
                throw self::fail($where, 'must be an integer');
            }
            if ($v < $lo || $v > $hi) {
                throw self::fail($where, "must be between {$lo} and {$hi}");
            }
        };
    }

    public static function boolean(): \Closure
    {
        return static function (mixed $v, string $where): void {
            if (!is_bool($v)) {
                throw self::fail($where, 'must be true or false');
            }
        };
    }

    public static function oneOf(string ...$choices): \Closure
    {
        return static function (mixed $v, string $where) use ($choices): void {
            if (!in_array($v, $choices, true)) {
                throw self::fail($where, 'must be one of ' . implode(', ', $choices));
            }
        };
    }

    public static function contentId(): \Closure
    {
        return static function (mixed $v, string $where): void {
            if (!Json::isContentId($v)) {
                throw self::fail($where, 'must be a content id sha256:<64 lowercase hex>');
            }
        };
    }

    public static function nodeId(): \Closure
    {
        return static function (mixed $v, string $where): void {
            if (!is_string($v) || preg_match('/\A[0-9a-f]{64}\z/', $v) !== 1) {
                throw self::fail($where, 'must be 64 lowercase hex characters (an Ed25519 public key)');
            }
        };
    }

    public static function time(): \Closure
    {
        return static function (mixed $v, string $where): void {
            Time::parse($v, $where);
        };
    }

    public static function nullable(\Closure $inner): \Closure
    {
        return static function (mixed $v, string $where) use ($inner): void {
            if ($v !== null) {
                $inner($v, $where);
            }
        };
    }

    public static function array(\Closure $item, int $max, int $min = 0, bool $unique = false): \Closure
    {
        return static function (mixed $v, string $where) use ($item, $max, $min, $unique): void {
            if (!is_array($v)) {
                throw self::fail($where, 'must be an array');
            }
            if (count($v) < $min || count($v) > $max) {
                throw self::fail($where, "must have {$min}..{$max} items");
            }
            foreach ($v as $i => $x) {
                $item($x, "{$where}[{$i}]");
            }
            if ($unique && count(array_unique(array_map(fn ($x) => Json::encode($x), $v))) !== count($v)) {
                throw self::fail($where, 'items must be unique');
            }
        };
    }

    public static function strMap(\Closure $key, \Closure $value, int $max): \Closure
    {
        return static function (mixed $v, string $where) use ($key, $value, $max): void {
            if (!$v instanceof JsonObject) {
                throw self::fail($where, 'must be an object');
            }
            if (count($v) > $max) {
                throw self::fail($where, "must have at most {$max} entries");
            }
            foreach ($v as $k => $x) {
                $key($k, "{$where} key");
                $value($x, "{$where}.{$k}");
            }
        };
    }

    /**
     * An object with exactly these fields (unknown ones refused unless `$openEnded`).
     *
     * @param array<string, \Closure> $required
     * @param array<string, \Closure> $optional
     */
    public static function obj(array $required, array $optional = [], bool $openEnded = false): \Closure
    {
        return static function (mixed $v, string $where) use ($required, $optional, $openEnded): void {
            if (!$v instanceof JsonObject) {
                throw self::fail($where, 'must be an object');
            }
            $missing = array_values(array_filter(array_keys($required), fn ($k) => !$v->has((string) $k)));
            if ($missing) {
                throw self::fail($where, 'missing field(s) ' . implode(', ', $missing));
            }
            if (!$openEnded) {
                $unknown = array_values(array_filter($v->keys(),
                    fn ($k) => !array_key_exists($k, $required) && !array_key_exists($k, $optional)));
                if ($unknown) {
                    sort($unknown, SORT_STRING);
                    throw self::fail($where, 'unknown field(s) ' . implode(', ', array_slice($unknown, 0, 8)));
                }
            }
            foreach ($required as $k => $c) {
                $c($v[(string) $k], "{$where}.{$k}");
            }
            foreach ($optional as $k => $c) {
                if ($v->has((string) $k)) {
                    $c($v[(string) $k], "{$where}.{$k}");
                }
            }
        };
    }
}
