<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ConfigError;
use Phase\Error\IOFailure;
use Phase\Error\MissingInput;

/**
 * The trust keyring (docs/documents.md, "Keyring"): named Ed25519 public keys with
 * roles, and per-role thresholds. Default deny: a key that is not listed, or listed
 * without the role asked for, is not trusted for it.
 *
 * load() reads the TOML file the Phase tools write (`phase-key trust`): `[thresholds]`
 * with `role = n`, and `[keys.<name>]` tables with `key = "<64 hex>"` and
 * `roles = [...]`, comments and blank lines. Other TOML (dotted keys, inline tables,
 * other sections) is refused as `bad_config`, as are unknown fields, bad roles and a
 * key listed twice — the same rules phase-core applies.
 */
final class Keyring
{
    public const ROLES = ['job-submitter', 'boot-signer', 'worker'];
    public const MAX_BYTES = 1 << 20;
    public const MAX_KEYS = 10000;
    public const MAX_THRESHOLD = 16;
    private const NAME_RE = '/\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\z/';

    /**
     * @param array<string, array{name: string, roles: list<string>}> $keys by hex key
     * @param array<string, int> $thresholds by role
     */
    private function __construct(private array $keys = [], private array $thresholds = [],
                                 public readonly string $source = '<keyring>')
    {
    }

    public static function empty(): self
    {
        return new self([], [], '<empty keyring>');
    }

    /**
     * A keyring from PHP values: `['worker-1' => ['key' => '<hex>', 'roles' => ['worker']]]`.
     *
     * @param array<string, array{key: string, roles: list<string>}> $entries
     * @param array<string, int> $thresholds
     */
    public static function fromArray(array $entries, array $thresholds = [], string $source = '<keyring>'): self
    {
        $ring = new self([], [], $source);
        foreach ($thresholds as $role => $n) {
            if (!in_array($role, self::ROLES, true)) {
                throw new ConfigError("keyring {$source}: unknown role " . json_encode($role) . ' in [thresholds]',
                    null, 'roles are ' . implode(', ', self::ROLES));
            }
            if (!is_int($n) || $n < 1 || $n > self::MAX_THRESHOLD) {
                throw new ConfigError("keyring {$source}: threshold for {$role} must be an integer from 1 to "
                    . self::MAX_THRESHOLD);
            }
            $ring->thresholds[$role] = $n;
        }
        if (count($entries) > self::MAX_KEYS) {
            throw new ConfigError("keyring {$source} lists more than " . self::MAX_KEYS . ' keys');
        }
        foreach ($entries as $name => $entry) {
            $name = (string) $name;
            $where = "keyring {$source}: keys.{$name}";
            if (preg_match(self::NAME_RE, $name) !== 1) {
                throw new ConfigError("{$where}: a name is 1-64 of A-Z a-z 0-9 . _ -");
            }
            if (!is_array($entry)) {
                throw new ConfigError("{$where} must be a table with key and roles");
            }
            $extra = array_diff(array_keys($entry), ['key', 'roles']);
            if ($extra) {
                throw new ConfigError("{$where}: unknown field(s) " . implode(', ', $extra));
            }
            $key = $entry['key'] ?? null;
            if (!is_string($key) || preg_match('/\A[0-9a-f]{64}\z/', $key) !== 1) {
                throw new ConfigError("{$where}: key is not 64 lowercase hex characters (an Ed25519 public key)");
            }
            $roles = $entry['roles'] ?? [];
            if (!is_array($roles) || !array_is_list($roles)
                || array_filter($roles, fn ($r) => !is_string($r) || !in_array($r, self::ROLES, true))) {
                throw new ConfigError("{$where}: roles must be a list drawn from " . implode(', ', self::ROLES));
            }
            if (isset($ring->keys[$key])) {
                throw new ConfigError("{$where}: the same key is also listed as {$ring->keys[$key]['name']}");
            }
            $ring->keys[$key] = ['name' => $name, 'roles' => array_values(array_unique($roles))];
        }
        return $ring;
    }

    /** Read a keyring file (66 when it is missing, 74 when unreadable, 78 when bad). */
    public static function load(string $path): self
    {
        if (!file_exists($path)) {
            throw new MissingInput("no keyring at {$path}");
        }
        $data = is_file($path) ? @file_get_contents($path, false, null, 0, self::MAX_BYTES + 1) : false;
        if ($data === false) {
            throw new IOFailure("cannot read the keyring {$path}", null, null, ['path' => $path]);
        }
        return self::parse($data, $path);
    }

    /** Parse keyring TOML text. */
    public static function parse(string $text, string $source = '<keyring>'): self
    {
        if (strlen($text) > self::MAX_BYTES) {
            throw new ConfigError("keyring {$source} is over " . self::MAX_BYTES . ' bytes');
        }
        [$entries, $thresholds] = (new KeyringToml($source))->read($text);
        return self::fromArray($entries, $thresholds, $source);
    }

    /** A copy with one more trusted key (e.g. a local worker's key you decided to trust). */
    public function withKey(string $name, string $key, array $roles): self
    {
        $entries = [];
        foreach ($this->keys as $k => $e) {
            if ($k !== $key) {
                $entries[$e['name']] = ['key' => $k, 'roles' => $e['roles']];
            }
        }
        $entries[$name] = ['key' => $key, 'roles' => $roles];
        return self::fromArray($entries, $this->thresholds, $this->source);
    }

    /** True only if `$key` (64 hex) is listed with `$role`. */
    public function allows(string $key, string $role): bool
    {
        if (!in_array($role, self::ROLES, true)) {
            throw new \InvalidArgumentException("unknown role {$role}");
        }
        return isset($this->keys[$key]) && in_array($role, $this->keys[$key]['roles'], true);
    }

    public function nameOf(string $key): ?string
    {
        return $this->keys[$key]['name'] ?? null;
    }

    public function threshold(string $role): int
    {
        return $this->thresholds[$role] ?? 1;
    }

    /** @return array<string, list<string>> roles by hex key */
    public function keys(): array
    {
        return array_map(fn ($e) => $e['roles'], $this->keys);
    }
}
