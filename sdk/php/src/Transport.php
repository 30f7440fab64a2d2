<?php

declare(strict_types=1);

namespace Phase;

/** How a Client reaches something that runs jobs: a local node, or plasm-exec. */
interface Transport
{
    /**
     * Run `$job` and return the raw outcome: `result` (the job_result record),
     * `manifest` (the signed job manifest envelope), `stdout`, `stderr` (bytes).
     * Throws a PhaseException carrying the tool's or node's slug on failure.
     *
     * @param callable(JsonObject): void|null $onProgress called with each job_progress record
     * @return array{result: JsonObject, manifest: ?JsonObject, stdout: string, stderr: string}
     */
    public function run(Job $job, ?callable $onProgress = null): array;

    /** The node id (64 hex) of the worker this transport runs jobs on, when it is known. */
    public function workerKey(): ?string;
}
