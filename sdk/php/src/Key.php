<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ConfigError;
use Phase\Error\IOFailure;
use Phase\Error\MissingInput;

/**
 * An Ed25519 identity (a job submitter's key), read from the key files the Phase
 * tools write (`phase-key new`, a node's `<home>/key`):
 * `{"v":1,"type":"secret_key","alg":"ed25519","seed":"<64 hex>","key":"<64 hex>"}`.
 * A key file that its group or others can read is refused, as the tools refuse it.
 */
final class Key
{
    private const MAX_FILE_BYTES = 4096;

    private string $seed;
    public readonly string $publicHex;

    public function __construct(#[\SensitiveParameter] string $seed)
    {
        if (strlen($seed) !== Crypto::SEED_BYTES) {
            throw new \InvalidArgumentException('a seed is 32 bytes');
        }
        $this->seed = $seed;
        $this->publicHex = bin2hex(Crypto::publicKey($seed));
    }

    public static function load(string $path): self
    {
        clearstatcache(true, $path);
        if (!file_exists($path)) {
            throw new MissingInput("no key file at {$path}", null, 'make one with `phase-key new --key=FILE`');
        }
        $mode = @fileperms($path);
        if ($mode !== false && ($mode & 0o077) !== 0) {
            throw new ConfigError(sprintf('key file %s is readable by others (mode %04o)', $path, $mode & 0o7777),
                null, "chmod 600 {$path}");
        }
        $data = @file_get_contents($path, false, null, 0, self::MAX_FILE_BYTES + 1);
        if ($data === false) {
            throw new IOFailure("cannot read the key file {$path}", null, null, ['path' => $path]);
        }
        try {
            $doc = Json::parse($data, self::MAX_FILE_BYTES);
        } catch (Error\InputError $e) {
            throw new ConfigError("key file {$path} is damaged: {$e->getMessage()}");
        }
        $seed = $doc instanceof JsonObject ? $doc['seed'] : null;
        if (!$doc instanceof JsonObject || $doc['type'] !== 'secret_key' || $doc['alg'] !== 'ed25519'
            || !is_string($seed) || preg_match('/\A[0-9a-f]{64}\z/', $seed) !== 1) {
            throw new ConfigError("key file {$path} is not an Ed25519 secret key of the Phase tools");
        }
        $key = new self(hex2bin($seed));
        if ($doc->has('key') && $doc['key'] !== $key->publicHex) {
            throw new ConfigError("key file {$path} is damaged: its key does not belong to its seed");
        }
        return $key;
    }

    public function sign(string $message): string
    {
        return Crypto::sign($this->seed, $message);
    }

    /** @internal */
    public function seed(): string
    {
        return $this->seed;
    }

    public function __debugInfo(): array
    {
        return ['publicHex' => $this->publicHex];
    }
}
