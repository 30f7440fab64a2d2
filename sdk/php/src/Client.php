<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ProtocolViolation;

/**
 * Submit jobs and get verified results.
 *
 *     $client = Client::local();                     // the plasmd of PHASE_HOME
 *     $result = $client->submit(Job::fromFile('hello.wasm')->withStdin('Hello, World'));
 *     echo $result->stdout;                          // the receipt is already verified
 *
 * Every result's receipt is verified here, offline, before submit() returns: its
 * Ed25519 signature by a trusted worker (the `$trusted` keyring; by default only the
 * transport's own worker: the local node, or this machine's plasm-exec key), and its
 * binding to the job manifest, the module and stdin bytes sent and the stdout and
 * stderr bytes received. A node's word that it verified the receipt is not taken.
 */
final class Client
{
    public function __construct(private Transport $transport, private ?Keyring $trusted = null)
    {
    }

    /** A client of the node running for `$home` (default: PHASE_HOME, ...). */
    public static function local(?string $home = null, ?Keyring $trusted = null, ?Key $submitter = null): self
    {
        return new self(new LocalTransport(home: $home, submitter: $submitter), $trusted);
    }

    /** A client that runs jobs with plasm-exec on this machine, no node needed. */
    public static function process(string $plasmExec = 'plasm-exec', ?string $home = null,
                                   ?Keyring $trusted = null, ?Key $submitter = null): self
    {
        return new self(new ProcessTransport($plasmExec, $home, $submitter), $trusted);
    }

    public function transport(): Transport
    {
        return $this->transport;
    }

    /**
     * The workers this client trusts: the keyring given, else the transport's worker.
     */
    public function trusted(): Keyring
    {
        if ($this->trusted === null) {
            $key = $this->transport->workerKey();
            $this->trusted = $key === null ? Keyring::empty()
                : Keyring::empty()->withKey('local-worker', $key, ['worker']);
        }
        return $this->trusted;
    }

    /**
     * Run `$job`; return its verified Result (a guest that fails is a Result too).
     *
     * @param callable(JsonObject): void|null $onProgress gets each job_progress record
     */
    public function submit(Job $job, ?callable $onProgress = null): Result
    {
        $raw = $this->transport->run($job, $onProgress);
        $rec = $raw['result'];
        $envelope = $rec['envelope'];
        if (!$envelope instanceof JsonObject) {
            throw new ProtocolViolation('the job_result carries no receipt envelope');
        }
        $receipt = Receipt::fromEnvelope($envelope);
        $worker = is_string($rec['worker']) ? $rec['worker'] : null;
        $verified = $receipt->verify($this->trusted(), $raw['manifest'], $raw['stdout'], $raw['stderr'],
            stdin: $job->stdinBytes(), module: $job->moduleId === null ? $job->moduleBytes() : null,
            worker: $worker);
        if ($job->moduleId !== null && $verified->body['module'] !== $job->moduleId) {
            throw new Error\Rejected("the receipt's module is {$verified->body['module']}, expected {$job->moduleId}",
                'wrong_module', 'the module bytes are not the ones the receipt names', ['field' => 'module']);
        }
        $body = $verified->body;
        return new Result($verified->body['job'], $raw['stdout'], $raw['stderr'], $body['ended'],
            $body['exit_code'], $receipt, $raw['manifest'], $body['worker'], $verified);
    }
}
