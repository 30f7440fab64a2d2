<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ConfigError;

/**
 * The small part of TOML a keyring uses: `[thresholds]`, `[keys.<name>]` (the name
 * bare or in quotes), `name = "string" | 'string' | integer | [strings]` (arrays may
 * span lines), comments and blank lines. Anything else is `bad_config`.
 *
 * @internal used by Keyring::parse
 */
final class KeyringToml
{
    private const BARE = '[A-Za-z0-9_-]+';

    public function __construct(private string $source)
    {
    }

    /** @return array{0: array<string, array<string, mixed>>, 1: array<string, mixed>} */
    public function read(string $text): array
    {
        if (preg_match('//u', $text) !== 1) {
            throw $this->bad(0, 'is not valid UTF-8');
        }
        $lines = preg_split('/\r?\n/', $text);
        $entries = [];
        $thresholds = [];
        $seenThresholds = false;
        $table = null; // null (top level), 'thresholds' or ['keys', name]
        for ($no = 0; $no < count($lines); $no++) {
            $line = trim($lines[$no], " \t");
            if ($line === '' || $line[0] === '#') {
                continue;
            }
            if ($line[0] === '[') {
                $table = $this->header($line, $no + 1);
                if ($table === 'thresholds') {
                    if ($seenThresholds) {
                        throw $this->bad($no + 1, 'defines [thresholds] twice');
                    }
                    $seenThresholds = true;
                } elseif (is_array($table)) {
                    if (isset($entries[$table[1]])) {
                        throw $this->bad($no + 1, "defines [keys.{$table[1]}] twice");
                    }
                    $entries[$table[1]] = [];
                }
                continue;
            }
            // key = value (an array may continue on the next lines)
            if (preg_match('/\A(' . self::BARE . '|"[^"\\\\]*")[ \t]*=[ \t]*(.*)\z/', $line, $m) !== 1) {
                throw $this->bad($no + 1, 'has a line that is not `name = value` or a [table]');
            }
            $key = trim($m[1], '"');
            $rest = $m[2];
            while (str_starts_with($rest, '[') && !$this->arrayClosed($rest) && $no + 1 < count($lines)) {
                $rest .= "\n" . $lines[++$no];
            }
            $value = $this->value($rest, $no + 1);
            if ($table === null) {
                throw new ConfigError("keyring {$this->source}: unknown section(s) ['{$key}']", null,
                    'allowed: [keys.<name>], [thresholds]');
            }
            if ($table === 'thresholds') {
                if (array_key_exists($key, $thresholds)) {
                    throw $this->bad($no + 1, "sets {$key} twice");
                }
                $thresholds[$key] = $value;
            } else {
                if (array_key_exists($key, $entries[$table[1]])) {
                    throw $this->bad($no + 1, "sets keys.{$table[1]}.{$key} twice");
                }
                $entries[$table[1]][$key] = $value;
            }
        }
        return [$entries, $thresholds];
    }

    /** @return string|array{0: string, 1: string} */
    private function header(string $line, int $no): string|array
    {
        $line = $this->stripComment($line);
        if ($line === '[thresholds]') {
            return 'thresholds';
        }
        if (preg_match('/\A\[[ \t]*keys[ \t]*\.[ \t]*(' . self::BARE . '|"[^"\\\\]*"|\'[^\']*\')[ \t]*\]\z/', $line, $m) === 1) {
            return ['keys', substr($m[1], 0, 1) === '"' || substr($m[1], 0, 1) === "'" ? substr($m[1], 1, -1) : $m[1]];
        }
        if (preg_match('/\A\[[ \t]*(' . self::BARE . ')[ \t]*\]\z/', $line, $m) === 1 && $m[1] !== 'keys') {
            throw new ConfigError("keyring {$this->source}: unknown section(s) ['{$m[1]}']", null,
                'allowed: [keys.<name>], [thresholds]');
        }
        throw $this->bad($no, "has a table header this reader does not take: {$line}");
    }

    private function value(string $text, int $no): mixed
    {
        $text = trim($text);
        if (preg_match('/\A"((?:[^"\\\\]|\\\\.)*)"[ \t]*(#.*)?\z/', $text, $m) === 1) {
            return $this->basicString($m[1], $no);
        }
        if (preg_match('/\A\'([^\']*)\'[ \t]*(#.*)?\z/', $text, $m) === 1) {
            return $m[1];
        }
        if (preg_match('/\A([+-]?(?:0|[1-9](?:_?[0-9])*))[ \t]*(#.*)?\z/', $text, $m) === 1) {
            return (int) str_replace('_', '', $m[1]);
        }
        if (str_starts_with($text, '[')) {
            return $this->stringArray($text, $no);
        }
        throw $this->bad($no, 'has a value that is not a string, an integer or a list of strings');
    }

    /** @return list<string> */
    private function stringArray(string $text, int $no): array
    {
        $items = [];
        $i = 1;
        $n = strlen($text);
        $expectItem = true;
        while ($i < $n) {
            $i += strspn($text, " \t\r\n", $i);
            if ($i >= $n) {
                break;
            }
            $c = $text[$i];
            if ($c === '#') {
                $i = ($j = strpos($text, "\n", $i)) === false ? $n : $j;
                continue;
            }
            if ($c === ']') {
                $tail = trim(substr($text, $i + 1));
                if ($tail !== '' && $tail[0] !== '#') {
                    break;
                }
                return $items;
            }
            if ($c === ',' && !$expectItem) {
                $expectItem = true;
                $i++;
                continue;
            }
            if ($expectItem && preg_match('/\G"((?:[^"\\\\\n]|\\\\.)*)"|\G\'([^\'\n]*)\'/', $text, $m, 0, $i) === 1) {
                $items[] = isset($m[2]) ? $m[2] : $this->basicString($m[1], $no);
                $i += strlen($m[0]);
                $expectItem = false;
                continue;
            }
            break;
        }
        throw $this->bad($no, 'has a list that is not a list of strings');
    }

    private function arrayClosed(string $text): bool
    {
        try {
            $this->stringArray($text, 0);
            return true;
        } catch (ConfigError) {
            return false;
        }
    }

    private function basicString(string $body, int $no): string
    {
        $out = preg_replace_callback('/\\\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)/s', function (array $m) use ($no): string {
            $e = $m[1];
            $simple = ['"' => '"', '\\' => '\\', 'n' => "\n", 't' => "\t", 'r' => "\r", 'b' => "\x08", 'f' => "\x0c"];
            if (isset($simple[$e])) {
                return $simple[$e];
            }
            if ($e[0] === 'u' || $e[0] === 'U') {
                $cp = hexdec(substr($e, 1));
                if (($cp >= 0xD800 && $cp <= 0xDFFF) || $cp > 0x10FFFF) {
                    throw $this->bad($no, 'has a string with an invalid \\u escape');
                }
                return Json::utf8Char($cp);
            }
            throw $this->bad($no, 'has a string with an unknown escape');
        }, $body);
        return (string) $out;
    }

    private function stripComment(string $line): string
    {
        return rtrim(preg_replace('/[ \t]+#.*\z|#[^"\']*\z/', '', $line) ?? $line);
    }

    private function bad(int $no, string $what): ConfigError
    {
        return new ConfigError("keyring {$this->source} is not valid TOML: line {$no} {$what}", null,
            'edit keyrings with `phase-key trust` (docs/conventions.md, "Keyrings")');
    }
}
