<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;
use Phase\Error\Rejected;

/**
 * Verify any signed document offline, in phase-verify's order (docs/documents.md,
 * "Verification order"): structure → type → every signature → trusted signers with
 * the role and the threshold → body schema → bindings → validity window. Errors carry
 * phase-verify's slugs. Rollback marks (boot manifests) are the caller's business.
 */
final class Documents
{
    public const ROLES = ['job_manifest' => 'job-submitter', 'receipt' => 'worker', 'boot_manifest' => 'boot-signer'];
    public const MAX_CLOCK_SKEW_S = 300;

    /**
     * @param mixed $doc parsed JSON (JsonObject) or the document's bytes
     * @param int|null $now Unix seconds (default: the clock)
     */
    public static function verify(mixed $doc, Keyring $keyring, ?int $now = null, ?string $expectedType = null,
                                  ?string $role = null, ?int $threshold = null): Verified
    {
        $now ??= time();
        $env = Envelope::parse($doc);
        if ($expectedType !== null && $env->type !== $expectedType) {
            throw new Rejected("expected a {$expectedType}, got a {$env->type}", 'wrong_type');
        }
        $env->checkSignatures();
        $body = $env->body;
        if ($env->type === 'node_record') {
            Bodies::check($env->type, $body);
            $nodeId = $body['node_id'];
            if (!in_array($nodeId, array_column($env->signatures, 0), true)) {
                throw new Rejected('a node record must be signed by the node it describes', 'untrusted_signer');
            }
            $signers = [$nodeId => $keyring->nameOf($nodeId) ?? 'node-' . substr($nodeId, 0, 12)];
        } else {
            $signers = $env->trustedSigners($keyring, $role ?? self::ROLES[$env->type], $threshold);
            Bodies::check($env->type, $body);
        }
        if ($env->type === 'receipt' && !isset($signers[$body['worker']])) {
            throw new Rejected('receipt names worker ' . substr($body['worker'], 0, 16)
                . "… but that worker's trusted signature is not on it", 'untrusted_signer');
        }
        self::checkWindow($env->type, $body, $now);
        return new Verified($env->type, $env->id, $body, $signers, $env->json);
    }

    private static function checkWindow(string $type, JsonObject $body, int $now): void
    {
        if ($type === 'receipt') {
            $completed = Time::parse($body['completed'], 'receipt.completed');
            if ($completed > $now + self::MAX_CLOCK_SKEW_S) {
                throw new Rejected("receipt completed at {$body['completed']}, in the future (now "
                    . Time::format($now) . ')', 'not_yet_valid', 'check the clock');
            }
            return;
        }
        $created = Time::parse($body['created'], "{$type}.created");
        $expires = Time::parse($body['expires'], "{$type}.expires");
        if ($expires <= $created) {
            throw new InputError("{$type} expires ({$body['expires']}) before it is created", 'malformed');
        }
        if ($created > $now + self::MAX_CLOCK_SKEW_S) {
            throw new Rejected("{$type} is created at {$body['created']}, later than now (" . Time::format($now) . ')',
                'not_yet_valid', 'check the clock');
        }
        if ($now >= $expires) {
            throw new Rejected("{$type} expired at {$body['expires']} (now " . Time::format($now) . ')',
                'expired', 'ask the signer for a fresh document');
        }
    }
}
