<?php

declare(strict_types=1);

namespace Phase;

/**
 * The outcome of a job: the guest's output and the signed receipt that binds it.
 * A guest that exits non-zero, traps or hits a limit is a Result too (see `ended`
 * and `exitCode`), not an exception.
 */
final class Result
{
    public function __construct(
        public readonly string $job,
        public readonly string $stdout,
        public readonly string $stderr,
        public readonly string $ended,
        public readonly ?int $exitCode,
        public readonly Receipt $receipt,
        public readonly ?JsonObject $manifest,
        public readonly ?string $worker,
        public readonly ?Verified $verified = null,
    ) {
    }

    /** True when the guest exited with status 0. */
    public function ok(): bool
    {
        return $this->ended === 'exited' && $this->exitCode === 0;
    }

    /**
     * Verify the receipt again, offline, against `$trusted` workers: its signature, and
     * its binding to this result's manifest, stdout and stderr.
     */
    public function verify(Keyring $trusted, ?int $now = null): Verified
    {
        return $this->receipt->verify($trusted, $this->manifest, $this->stdout, $this->stderr,
            worker: $this->worker, now: $now);
    }
}
