<?php

declare(strict_types=1);

namespace Phase;

/**
 * A JSON object as parsed by Json::parse: keeps `{}` apart from `[]` and keeps
 * every key a string (a PHP array would turn the key "1" into the integer 1
 * and an empty object into an empty list).
 *
 * Read it like an array: `$body['stdout']`, `isset($body['name'])`, foreach.
 *
 * @implements \ArrayAccess<string, mixed>
 * @implements \IteratorAggregate<string, mixed>
 */
final class JsonObject implements \ArrayAccess, \IteratorAggregate, \Countable
{
    /** @param array<array-key, mixed> $members */
    public function __construct(private array $members = [])
    {
    }

    public function has(string $key): bool
    {
        return array_key_exists($key, $this->members);
    }

    public function get(string $key, mixed $default = null): mixed
    {
        return array_key_exists($key, $this->members) ? $this->members[$key] : $default;
    }

    /** @return list<string> */
    public function keys(): array
    {
        return array_map('strval', array_keys($this->members));
    }

    /** The members as a PHP array (keys that look like integers become integers). */
    public function members(): array
    {
        return $this->members;
    }

    /** Deep conversion to PHP arrays (for display; `{}` and `[]` both become []). */
    public function toArray(): array
    {
        $out = [];
        foreach ($this->members as $k => $v) {
            $out[$k] = self::plain($v);
        }
        return $out;
    }

    private static function plain(mixed $v): mixed
    {
        if ($v instanceof self) {
            return $v->toArray();
        }
        if (is_array($v)) {
            return array_map([self::class, 'plain'], $v);
        }
        return $v;
    }

    public function offsetExists(mixed $offset): bool
    {
        return array_key_exists($offset, $this->members);
    }

    public function offsetGet(mixed $offset): mixed
    {
        return $this->members[$offset] ?? null;
    }

    public function offsetSet(mixed $offset, mixed $value): void
    {
        if ($offset === null) {
            throw new \LogicException('a JSON object member needs a key');
        }
        $this->members[(string) $offset] = $value;
    }

    public function offsetUnset(mixed $offset): void
    {
        unset($this->members[$offset]);
    }

    public function getIterator(): \Generator
    {
        foreach ($this->members as $k => $v) {
            yield (string) $k => $v;
        }
    }

    public function count(): int
    {
        return count($this->members);
    }
}
