<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;

/**
 * RFC 3339 UTC times with second precision (`2026-11-27T03:26:44Z`), as integer
 * Unix seconds: ASCII digits, upper-case T and Z, no fractions or offsets, a real
 * calendar date and time (docs/documents.md, "Times").
 */
final class Time
{
    public static function parse(mixed $value, string $what = 'time'): int
    {
        if (!is_string($value)) {
            throw new InputError("{$what} must be an RFC 3339 UTC time string like 2026-11-27T03:26:44Z",
                'malformed');
        }
        if (preg_match('/\A([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\z/',
            $value, $m) !== 1) {
            throw new InputError("{$what} " . json_encode(substr($value, 0, 40), JSON_INVALID_UTF8_SUBSTITUTE)
                . ' is not of the form YYYY-MM-DDTHH:MM:SSZ', 'malformed');
        }
        [$y, $mo, $d, $h, $mi, $s] = array_map('intval', array_slice($m, 1));
        if ($y < 1 || $mo < 1 || $mo > 12 || $d < 1 || $d > self::daysIn($y, $mo) || $h > 23 || $mi > 59 || $s > 59) {
            throw new InputError("{$what} {$value} is not a valid date and time", 'malformed');
        }
        return self::daysFromCivil($y, $mo, $d) * 86400 + $h * 3600 + $mi * 60 + $s;
    }

    public static function format(int $secs): string
    {
        return gmdate('Y-m-d\TH:i:s\Z', $secs);
    }

    private static function daysIn(int $y, int $m): int
    {
        if ($m === 2) {
            return ($y % 4 === 0 && ($y % 100 !== 0 || $y % 400 === 0)) ? 29 : 28;
        }
        return in_array($m, [4, 6, 9, 11], true) ? 30 : 31;
    }

    /** Days since 1970-01-01 of a proleptic Gregorian date. */
    private static function daysFromCivil(int $y, int $m, int $d): int
    {
        $y -= $m <= 2 ? 1 : 0;
        $era = intdiv($y >= 0 ? $y : $y - 399, 400);
        $yoe = $y - $era * 400;
        $doy = intdiv(153 * ($m + ($m > 2 ? -3 : 9)) + 2, 5) + $d - 1;
        $doe = $yoe * 365 + intdiv($yoe, 4) - intdiv($yoe, 100) + $doy;
        return $era * 146097 + $doe - 719468;
    }
}
