<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\Rejected;

/**
 * A signed receipt (docs/documents.md): what ran, on what, with what result.
 *
 * verify() checks it offline as phase-verify does — structure, every Ed25519 signature
 * under libsodium's rule, a trusted `worker` signer that is the receipt's `worker`, the
 * body schema, `completed` not in the future — and then its bindings, as phase-core's
 * receipt.check_binding: the job (the manifest's id), module, stdin and profile of the
 * manifest, the worker you expect, and the content ids and sizes of the bytes you hold
 * (stdout, stderr, stdin, module). A mismatch is Rejected with slug `wrong_<field>`
 * (`wrong_stdout`, `wrong_job`, ...) and `details['field']`.
 */
final class Receipt
{
    public const EMPTY_ID = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

    private function __construct(public readonly JsonObject $envelope)
    {
    }

    /** @param JsonObject|string $envelope the signed receipt, parsed or as JSON text */
    public static function fromEnvelope(JsonObject|string $envelope): self
    {
        return new self(is_string($envelope) ? self::object($envelope) : $envelope);
    }

    /** The (unverified) body; call verify() before relying on it. */
    public function body(): JsonObject
    {
        $body = $this->envelope['body'];
        return $body instanceof JsonObject ? $body : new JsonObject();
    }

    /**
     * Verify the receipt and its bindings; return the verified document or throw.
     *
     * @param JsonObject|string|null $manifest the job manifest envelope (or its body) the receipt must be for
     * @param string|null $worker the node id (64 hex) that must have run it
     */
    public function verify(Keyring $trusted, JsonObject|string|null $manifest = null, ?string $stdout = null,
                           ?string $stderr = null, ?string $stdin = null, ?string $module = null,
                           ?string $worker = null, ?int $now = null): Verified
    {
        $verified = Documents::verify($this->envelope, $trusted, $now, 'receipt');
        $body = $verified->body;
        $want = [['worker', $worker]];
        if ($manifest !== null) {
            if (is_string($manifest)) {
                $manifest = self::object($manifest);
            }
            $mbody = $manifest->has('body') && $manifest['body'] instanceof JsonObject ? $manifest['body'] : $manifest;
            $m = Manifest::fromBody($mbody);
            $want[] = ['job', $m->id()];
            $want[] = ['module', $m->body['module']];
            $want[] = ['stdin', $m->body['stdin'] ?? self::EMPTY_ID];
            $want[] = ['deterministic', (bool) $m->body->get('deterministic', false)];
        }
        foreach (['stdout' => $stdout, 'stderr' => $stderr] as $name => $data) {
            if ($data !== null) {
                $want[] = [$name, Json::contentId($data)];
                $want[] = ["{$name}_bytes", strlen($data)];
            }
        }
        if ($stdin !== null) {
            $want[] = ['stdin', Json::contentId($stdin)];
        }
        if ($module !== null) {
            $want[] = ['module', Json::contentId($module)];
        }
        foreach ($want as [$field, $expected]) {
            if ($expected !== null && $body[$field] !== $expected) {
                $what = preg_replace('/_bytes\z/', '', $field);
                throw new Rejected("the receipt's {$field} is " . substr(var_export($body[$field], true), 0, 80)
                    . ', expected ' . substr(var_export($expected, true), 0, 80), "wrong_{$what}",
                    self::HINTS[$what] ?? 'the receipt is not for this job', ['field' => $field]);
            }
        }
        return $verified;
    }

    private const HINTS = [
        'worker' => 'the receipt was signed by another node than the one that ran the job',
        'job' => 'the receipt is for another job (an old receipt passed off for a new job?)',
        'stdout' => 'the output bytes are not the ones the receipt names',
        'stderr' => 'the output bytes are not the ones the receipt names',
        'stdin' => 'the input bytes are not the ones the receipt names',
        'module' => 'the module bytes are not the ones the receipt names',
    ];

    private static function object(string $json): JsonObject
    {
        $v = Json::parse($json);
        if (!$v instanceof JsonObject) {
            throw new Error\InputError('a signed document must be a JSON object', 'malformed');
        }
        return $v;
    }
}
