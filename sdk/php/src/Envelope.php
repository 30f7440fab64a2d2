<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;
use Phase\Error\Rejected;

/**
 * A signed envelope (docs/documents.md, "Envelope"), structurally checked; its
 * signatures are checked by checkSignatures().
 *
 * `{"v":1,"type":T,"body":{...},"signatures":[{"key":K,"sig":S},...]}`; each S is
 * Ed25519 over `"phase:" . T . ":v1\n" . canonical(body)`, and the document id is
 * the content id of that signing message.
 */
final class Envelope
{
    public const TYPES = ['job_manifest', 'receipt', 'node_record', 'boot_manifest'];
    public const MAX_SIGNATURES = 16;
    private const TYPE_RE = '/\A[a-z][a-z0-9_]{0,31}\z/';

    /** @param list<array{0: string, 1: string}> $signatures (key hex, sig hex) */
    private function __construct(
        public readonly string $type,
        public readonly JsonObject $body,
        public readonly array $signatures,
        public readonly string $message,
        public readonly string $id,
        public readonly JsonObject $json,
    ) {
    }

    public static function signingMessage(string $type, mixed $body): string
    {
        if (preg_match(self::TYPE_RE, $type) !== 1) {
            throw new InputError('document type is not a valid type name', 'malformed');
        }
        return "phase:{$type}:v1\n" . Json::encode($body);
    }

    public static function documentId(string $type, mixed $body): string
    {
        return Json::contentId(self::signingMessage($type, $body));
    }

    /** A new envelope of `$body` signed with each 32-byte seed of `$seeds`. */
    public static function sign(string $type, JsonObject $body, string ...$seeds): JsonObject
    {
        if (!$seeds) {
            throw new \InvalidArgumentException('at least one signer is needed');
        }
        $msg = self::signingMessage($type, $body);
        $sigs = [];
        $keys = [];
        foreach ($seeds as $seed) {
            $key = bin2hex(Crypto::publicKey($seed));
            if (isset($keys[$key])) {
                throw new InputError('the same key is given more than once', 'already_signed');
            }
            $keys[$key] = true;
            $sigs[] = new JsonObject(['key' => $key, 'sig' => bin2hex(Crypto::sign($seed, $msg))]);
        }
        return new JsonObject(['v' => 1, 'type' => $type, 'body' => $body, 'signatures' => $sigs]);
    }

    /** Check an envelope's structure (not its signatures); `$obj` is parsed JSON or its text. */
    public static function parse(mixed $obj): self
    {
        if (is_string($obj)) {
            $obj = Json::parse($obj);
        }
        if (!$obj instanceof JsonObject) {
            throw new InputError('a signed document must be a JSON object', 'malformed');
        }
        $fields = ['v', 'type', 'body', 'signatures'];
        $extra = array_diff($obj->keys(), $fields);
        if ($extra) {
            sort($extra, SORT_STRING);
            throw new InputError('unknown envelope field(s) ' . implode(', ', array_slice($extra, 0, 8)),
                'malformed', 'an envelope has exactly v, type, body and signatures');
        }
        $missing = array_diff($fields, $obj->keys());
        if ($missing) {
            sort($missing, SORT_STRING);
            throw new InputError('envelope is missing ' . implode(', ', $missing), 'malformed');
        }
        if ($obj['v'] !== 1) {
            throw new InputError('unsupported envelope version', 'malformed', 'this SDK reads v 1');
        }
        $type = $obj['type'];
        if (!is_string($type) || preg_match(self::TYPE_RE, $type) !== 1) {
            throw new InputError('envelope type must be a short lowercase name', 'malformed');
        }
        if (!in_array($type, self::TYPES, true)) {
            throw new Rejected("unknown document type {$type}", 'wrong_type',
                'known types: ' . implode(', ', self::TYPES));
        }
        $body = $obj['body'];
        if (!$body instanceof JsonObject) {
            throw new InputError('envelope body must be a JSON object', 'malformed');
        }
        $sigs = $obj['signatures'];
        if (!is_array($sigs) || !$sigs) {
            throw new InputError('envelope needs a non-empty list of signatures', 'malformed');
        }
        if (count($sigs) > self::MAX_SIGNATURES) {
            throw new InputError('envelope has ' . count($sigs) . ' signatures; at most '
                . self::MAX_SIGNATURES . ' allowed', 'too_large');
        }
        $out = [];
        $seen = [];
        foreach ($sigs as $i => $s) {
            if (!$s instanceof JsonObject || count($s) !== 2 || !$s->has('key') || !$s->has('sig')) {
                throw new InputError("signatures[{$i}] must be an object with exactly key and sig", 'malformed');
            }
            if (!is_string($s['key']) || preg_match('/\A[0-9a-f]{64}\z/', $s['key']) !== 1) {
                throw new InputError("signatures[{$i}].key must be 64 lowercase hex characters", 'malformed');
            }
            if (!is_string($s['sig']) || preg_match('/\A[0-9a-f]{128}\z/', $s['sig']) !== 1) {
                throw new InputError("signatures[{$i}].sig must be 128 lowercase hex characters", 'malformed');
            }
            $out[] = [$s['key'], $s['sig']];
            $seen[$s['key']] = true;
        }
        if (count($seen) !== count($out)) {
            throw new InputError('the same key appears twice in signatures', 'malformed');
        }
        $msg = self::signingMessage($type, $body);
        return new self($type, $body, $out, $msg, Json::contentId($msg), $obj);
    }

    /** Every signature must verify, whoever made it; else `bad_signature`. */
    public function checkSignatures(): void
    {
        foreach ($this->signatures as [$key, $sig]) {
            try {
                Crypto::verify(hex2bin($key), $this->message, hex2bin($sig));
            } catch (Rejected) {
                throw new Rejected('signature by ' . substr($key, 0, 16) . "… does not verify for this {$this->type}",
                    'bad_signature', 'the document was changed after signing, or signed as another type',
                    ['key' => $key]);
            }
        }
    }

    /**
     * The keyring names of the signers holding `$role`; `untrusted_signer` when there
     * is none, `threshold` when there are fewer than the keyring asks for.
     *
     * @return array<string, string> name by hex key
     */
    public function trustedSigners(Keyring $keyring, string $role, ?int $threshold = null): array
    {
        $need = $threshold ?? $keyring->threshold($role);
        $found = [];
        foreach ($this->signatures as [$key]) {
            if ($keyring->allows($key, $role)) {
                $found[$key] = (string) $keyring->nameOf($key);
            }
        }
        if (!$found) {
            $known = array_values(array_filter(array_map(fn ($s) => $keyring->nameOf($s[0]), $this->signatures)));
            $why = $known ? 'signed by ' . implode(', ', $known) . ", who may not act as {$role}"
                : 'no signer is in the keyring';
            throw new Rejected("{$this->type} has no trusted {$role} signature: {$why}", 'untrusted_signer',
                "add the signer to the keyring with role {$role} if you trust it");
        }
        if (count($found) < $need) {
            throw new Rejected("{$this->type} has " . count($found) . " trusted {$role} signature(s); {$need} required",
                'threshold', 'ask more key holders to co-sign (phase-key cosign)');
        }
        return $found;
    }
}
