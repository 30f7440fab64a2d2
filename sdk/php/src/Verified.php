<?php

declare(strict_types=1);

namespace Phase;

/** A document that passed Documents::verify(). */
final class Verified
{
    /** @param array<string, string> $signers keyring name by hex key */
    public function __construct(
        public readonly string $type,
        public readonly string $id,
        public readonly JsonObject $body,
        public readonly array $signers,
        public readonly JsonObject $envelope,
    ) {
    }
}
