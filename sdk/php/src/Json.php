<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;

/**
 * Canonical JSON (docs/documents.md, "Canonical JSON"), written by hand.
 *
 * PHP's json_encode cannot produce the canonical bytes (it escapes "/" and U+2028/2029,
 * turns an empty object into `[]`, writes floats) and json_decode cannot enforce the
 * input rules (it keeps the last of two duplicate keys and turns large integers into
 * floats). So both directions are here:
 *
 * - parse(): any JSON text under the input rules: valid UTF-8 without a byte-order
 *   mark, ASCII keys, no duplicate keys, integers only and within ±(2^53 − 1), no lone
 *   surrogates, nesting at most 32, at most `$maxBytes`. Objects become JsonObject,
 *   arrays PHP lists.
 * - encode(): the canonical bytes: no whitespace, members sorted by key, only `"`, `\`
 *   and U+0000–U+001F escaped (`\b \f \n \r \t`, else `\u00xx` lowercase), everything
 *   else raw UTF-8. Objects are JsonObject, stdClass or non-list PHP arrays; lists are
 *   PHP lists (so an empty PHP array is `[]`: use `new JsonObject()` for `{}`).
 *
 * Errors are InputError with slug `malformed` or `too_large`, as in phase-core.
 */
final class Json
{
    public const MAX_DEPTH = 32;
    public const MAX_INT = 9007199254740991; // 2^53 - 1
    public const DEFAULT_MAX_BYTES = 1 << 20;
    private const MAX_INT_DIGITS = 16;

    private const ESCAPES = [
        '"' => '\\"', '\\' => '\\\\', "\x08" => '\\b', "\x0c" => '\\f', "\n" => '\\n',
        "\r" => '\\r', "\t" => '\\t',
        "\x00" => '\\u0000', "\x01" => '\\u0001', "\x02" => '\\u0002', "\x03" => '\\u0003',
        "\x04" => '\\u0004', "\x05" => '\\u0005', "\x06" => '\\u0006', "\x07" => '\\u0007',
        "\x0b" => '\\u000b', "\x0e" => '\\u000e', "\x0f" => '\\u000f', "\x10" => '\\u0010',
        "\x11" => '\\u0011', "\x12" => '\\u0012', "\x13" => '\\u0013', "\x14" => '\\u0014',
        "\x15" => '\\u0015', "\x16" => '\\u0016', "\x17" => '\\u0017', "\x18" => '\\u0018',
        "\x19" => '\\u0019', "\x1a" => '\\u001a', "\x1b" => '\\u001b', "\x1c" => '\\u001c',
        "\x1d" => '\\u001d', "\x1e" => '\\u001e', "\x1f" => '\\u001f',
    ];

    private string $s;
    private int $i = 0;
    private int $n;

    private function __construct(string $s, private bool $strict = true)
    {
        $this->s = $s;
        $this->n = strlen($s);
    }

    // -- encoding -------------------------------------------------------------

    /** The canonical bytes of `$value` (checked while encoding). */
    public static function encode(mixed $value): string
    {
        return self::enc($value, 1);
    }

    private static function enc(mixed $v, int $depth): string
    {
        if ($v === null) {
            return 'null';
        }
        if ($v === true) {
            return 'true';
        }
        if ($v === false) {
            return 'false';
        }
        if (is_int($v)) {
            if ($v > self::MAX_INT || $v < -self::MAX_INT) {
                throw self::malformed("integer {$v} is out of range (max ±" . self::MAX_INT . ')');
            }
            return (string) $v;
        }
        if (is_float($v)) {
            throw self::malformed('floating-point numbers are not allowed; use an integer');
        }
        if (is_string($v)) {
            return self::encodeString($v);
        }
        if ($v instanceof JsonObject) {
            return self::encodeObject($v->members(), $depth);
        }
        if ($v instanceof \stdClass) {
            return self::encodeObject(get_object_vars($v), $depth);
        }
        if (is_array($v)) {
            if (!array_is_list($v)) {
                return self::encodeObject($v, $depth);
            }
            if ($depth > self::MAX_DEPTH) {
                throw self::malformed('nesting deeper than ' . self::MAX_DEPTH . ' levels');
            }
            $parts = [];
            foreach ($v as $item) {
                $parts[] = self::enc($item, $depth + 1);
            }
            return '[' . implode(',', $parts) . ']';
        }
        throw self::malformed(get_debug_type($v) . ' is not a JSON value');
    }

    /** @param array<array-key, mixed> $members */
    private static function encodeObject(array $members, int $depth): string
    {
        if ($depth > self::MAX_DEPTH) {
            throw self::malformed('nesting deeper than ' . self::MAX_DEPTH . ' levels');
        }
        $byKey = [];
        foreach ($members as $k => $item) {
            $k = (string) $k;
            if (preg_match('/[\x80-\xff]/', $k) === 1) {
                throw self::malformed('object key ' . self::show($k) . ' is not ASCII');
            }
            $byKey[$k] = $item;
        }
        ksort($byKey, SORT_STRING);
        $parts = [];
        foreach ($byKey as $k => $item) {
            $parts[] = self::encodeString((string) $k) . ':' . self::enc($item, $depth + 1);
        }
        return '{' . implode(',', $parts) . '}';
    }

    private static function encodeString(string $s): string
    {
        if (preg_match('//u', $s) !== 1) {
            throw self::malformed('a string is not valid UTF-8 (a lone surrogate or a stray byte)');
        }
        return '"' . strtr($s, self::ESCAPES) . '"';
    }

    // -- parsing --------------------------------------------------------------

    /** Parse one JSON value under the canonical input rules, or throw. */
    public static function parse(string $data, int $maxBytes = self::DEFAULT_MAX_BYTES): mixed
    {
        return self::decode($data, $maxBytes, true);
    }

    /**
     * Parse a protocol record (a line from a node or a tool): the same rules, except
     * that numbers with a fraction or exponent become floats and integers may exceed
     * 2^53. A signed document inside is still checked in full when it is verified
     * (encode() refuses floats and out-of-range integers).
     */
    public static function parseRecord(string $data, int $maxBytes): mixed
    {
        return self::decode($data, $maxBytes, false);
    }

    private static function decode(string $data, int $maxBytes, bool $strict): mixed
    {
        if (strlen($data) > $maxBytes) {
            throw new InputError('document is ' . strlen($data) . " bytes, over the cap of {$maxBytes}",
                'too_large', 'documents are small; is this the right file?');
        }
        if (preg_match('//u', $data) !== 1) {
            throw self::malformed('not UTF-8');
        }
        if (str_starts_with($data, "\xEF\xBB\xBF")) {
            throw self::malformed('a byte-order mark is not allowed');
        }
        if (trim($data, " \t\n\r\v\f") === '') {
            throw self::malformed('the input is empty', 'expected one JSON document');
        }
        $p = new self($data, $strict);
        $p->ws();
        $value = $p->value(1);
        $p->ws();
        if ($p->i !== $p->n) {
            throw self::malformed("invalid JSON: extra data at byte {$p->i}");
        }
        return $value;
    }

    private function ws(): void
    {
        $this->i += strspn($this->s, " \t\n\r", $this->i);
    }

    private function value(int $depth): mixed
    {
        if ($this->i >= $this->n) {
            throw self::malformed('invalid JSON: unexpected end of input', 'is the file truncated?');
        }
        $c = $this->s[$this->i];
        switch ($c) {
            case '{':
                return $this->object($depth);
            case '[':
                return $this->array($depth);
            case '"':
                return $this->string();
            case 't':
                return $this->literal('true', true);
            case 'f':
                return $this->literal('false', false);
            case 'n':
                return $this->literal('null', null);
        }
        if ($c === '-' || ($c >= '0' && $c <= '9')) {
            return $this->number();
        }
        if ($c === 'N' || $c === 'I') {
            throw self::malformed('NaN and Infinity are not allowed in Phase documents');
        }
        throw self::malformed("invalid JSON: unexpected character at byte {$this->i}");
    }

    private function literal(string $word, mixed $value): mixed
    {
        if (substr_compare($this->s, $word, $this->i, strlen($word)) !== 0) {
            throw self::malformed("invalid JSON: unexpected character at byte {$this->i}");
        }
        $this->i += strlen($word);
        return $value;
    }

    private function number(): int|float
    {
        if (preg_match('/\G(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?/', $this->s, $m, 0, $this->i) !== 1) {
            if (substr_compare($this->s, '-Infinity', $this->i, 9) === 0) {
                throw self::malformed('-Infinity is not allowed in Phase documents');
            }
            throw self::malformed("invalid JSON: bad number at byte {$this->i}");
        }
        if (!$this->strict && (($m[2] ?? '') !== '' || ($m[3] ?? '') !== '' || strlen($m[1]) > 18)) {
            $this->i += strlen($m[0]);
            return (float) $m[0];
        }
        if (($m[2] ?? '') !== '' || ($m[3] ?? '') !== '') {
            throw self::malformed('floating-point number ' . self::show($m[0]) . ' is not allowed; use an integer');
        }
        $text = $m[1];
        $this->i += strlen($m[0]);
        if ($this->strict && strlen(ltrim($text, '-')) > self::MAX_INT_DIGITS) {
            throw self::malformed('integer ' . substr($text, 0, 20) . '... is out of range (max ±' . self::MAX_INT . ')');
        }
        $n = (int) $text;
        if ($this->strict && ($n > self::MAX_INT || $n < -self::MAX_INT)) {
            throw self::malformed("integer {$n} is out of range (max ±" . self::MAX_INT . ')');
        }
        return $n;
    }

    private function string(): string
    {
        $this->i++; // the opening quote
        $out = '';
        while (true) {
            $len = strcspn($this->s, "\"\\\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
                . "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f", $this->i);
            $out .= substr($this->s, $this->i, $len);
            $this->i += $len;
            if ($this->i >= $this->n) {
                throw self::malformed('invalid JSON: unterminated string', 'is the file truncated?');
            }
            $c = $this->s[$this->i];
            if ($c === '"') {
                $this->i++;
                return $out;
            }
            if ($c !== '\\') {
                throw self::malformed("invalid JSON: a control character in a string at byte {$this->i}");
            }
            $e = $this->s[$this->i + 1] ?? '';
            $this->i += 2;
            switch ($e) {
                case '"': $out .= '"'; break;
                case '\\': $out .= '\\'; break;
                case '/': $out .= '/'; break;
                case 'b': $out .= "\x08"; break;
                case 'f': $out .= "\x0c"; break;
                case 'n': $out .= "\n"; break;
                case 'r': $out .= "\r"; break;
                case 't': $out .= "\t"; break;
                case 'u':
                    $out .= $this->unicodeEscape();
                    break;
                default:
                    throw self::malformed('invalid JSON: bad escape at byte ' . ($this->i - 2));
            }
        }
    }

    private function hex4(): int
    {
        $h = substr($this->s, $this->i, 4);
        if (preg_match('/\A[0-9A-Fa-f]{4}\z/', $h) !== 1) {
            throw self::malformed('invalid JSON: bad \\u escape at byte ' . ($this->i - 2));
        }
        $this->i += 4;
        return hexdec($h);
    }

    private function unicodeEscape(): string
    {
        $cp = $this->hex4();
        if ($cp >= 0xDC00 && $cp <= 0xDFFF) {
            throw self::malformed('string contains a lone surrogate');
        }
        if ($cp >= 0xD800 && $cp <= 0xDBFF) {
            if (substr_compare($this->s, '\\u', $this->i, 2) !== 0) {
                throw self::malformed('string contains a lone surrogate');
            }
            $this->i += 2;
            $lo = $this->hex4();
            if ($lo < 0xDC00 || $lo > 0xDFFF) {
                throw self::malformed('string contains a lone surrogate');
            }
            $cp = 0x10000 + (($cp - 0xD800) << 10) + ($lo - 0xDC00);
        }
        return self::utf8Char($cp);
    }

    /** The UTF-8 bytes of one code point. */
    public static function utf8Char(int $cp): string
    {
        if ($cp < 0x80) {
            return chr($cp);
        }
        if ($cp < 0x800) {
            return chr(0xC0 | ($cp >> 6)) . chr(0x80 | ($cp & 0x3F));
        }
        if ($cp < 0x10000) {
            return chr(0xE0 | ($cp >> 12)) . chr(0x80 | (($cp >> 6) & 0x3F)) . chr(0x80 | ($cp & 0x3F));
        }
        return chr(0xF0 | ($cp >> 18)) . chr(0x80 | (($cp >> 12) & 0x3F))
            . chr(0x80 | (($cp >> 6) & 0x3F)) . chr(0x80 | ($cp & 0x3F));
    }

    private function object(int $depth): JsonObject
    {
        if ($depth > self::MAX_DEPTH) {
            throw self::malformed('nesting deeper than ' . self::MAX_DEPTH . ' levels');
        }
        $this->i++;
        $members = [];
        $this->ws();
        if (($this->s[$this->i] ?? '') === '}') {
            $this->i++;
            return new JsonObject();
        }
        while (true) {
            if (($this->s[$this->i] ?? '') !== '"') {
                throw self::malformed("invalid JSON: expected a key in quotes at byte {$this->i}",
                    'is the file truncated?');
            }
            $key = $this->string();
            if (preg_match('/[\x80-\xff]/', $key) === 1) {
                throw self::malformed('non-ASCII key ' . self::show($key), 'object keys must be ASCII');
            }
            if (array_key_exists($key, $members)) {
                throw self::malformed('duplicate key ' . self::show($key), 'each key may appear once');
            }
            $this->ws();
            if (($this->s[$this->i] ?? '') !== ':') {
                throw self::malformed("invalid JSON: expected ':' at byte {$this->i}");
            }
            $this->i++;
            $this->ws();
            $members[$key] = $this->value($depth + 1);
            $this->ws();
            $c = $this->s[$this->i] ?? '';
            $this->i++;
            if ($c === '}') {
                return new JsonObject($members);
            }
            if ($c !== ',') {
                throw self::malformed('invalid JSON: expected \',\' or \'}\' at byte ' . ($this->i - 1),
                    'is the file truncated?');
            }
            $this->ws();
        }
    }

    /** @return list<mixed> */
    private function array(int $depth): array
    {
        if ($depth > self::MAX_DEPTH) {
            throw self::malformed('nesting deeper than ' . self::MAX_DEPTH . ' levels');
        }
        $this->i++;
        $items = [];
        $this->ws();
        if (($this->s[$this->i] ?? '') === ']') {
            $this->i++;
            return [];
        }
        while (true) {
            $items[] = $this->value($depth + 1);
            $this->ws();
            $c = $this->s[$this->i] ?? '';
            $this->i++;
            if ($c === ']') {
                return $items;
            }
            if ($c !== ',') {
                throw self::malformed('invalid JSON: expected \',\' or \']\' at byte ' . ($this->i - 1),
                    'is the file truncated?');
            }
            $this->ws();
        }
    }

    // -- helpers --------------------------------------------------------------

    /** `sha256:` + the lowercase hex SHA-256 of `$data`. */
    public static function contentId(string $data): string
    {
        return 'sha256:' . hash('sha256', $data);
    }

    public static function isContentId(mixed $v): bool
    {
        return is_string($v) && preg_match('/\Asha256:[0-9a-f]{64}\z/', $v) === 1;
    }

    private static function show(string $s): string
    {
        return '"' . addcslashes(substr($s, 0, 64), "\0..\37\"\\\177..\377") . '"';
    }

    private static function malformed(string $message, ?string $hint = null): InputError
    {
        return new InputError($message, 'malformed', $hint);
    }
}
