<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ProtocolViolation;
use Phase\Error\TempFailure;
use Phase\Error\Unavailable;

/**
 * A running plasmd on this machine, through its control socket (docs/local-api.md).
 *
 * The socket is found as plasmd makes it: `<home>/plasmd.sock`, else the abstract
 * socket of a private-mode node for that home. By default the node signs the job
 * manifest with its own key (`"submitter": "node"`; the caller must be the node's
 * user); with a Key the SDK builds and signs the manifest itself and the node only
 * runs it (what a member of the node's `control_group` does, with `inline: true`).
 */
final class LocalTransport implements Transport
{
    private ?string $nodeId = null;
    private int $seq = 0;

    /**
     * @param string|null $home the node's home (default: PHASE_HOME, XDG_DATA_HOME/phase, ~/.local/share/phase)
     * @param string|null $socket an explicit socket path (a leading NUL for an abstract socket)
     * @param Key|null $submitter sign manifests with this key instead of asking the node to
     * @param bool $inline send module and stdin bytes inline instead of their paths
     */
    public function __construct(
        private ?string $home = null,
        private ?string $socket = null,
        private ?Key $submitter = null,
        private bool $inline = false,
        private float $connectTimeoutS = 5.0,
    ) {
    }

    /** The node's status record (docs/local-api.md, `status`). */
    public function status(): JsonObject
    {
        $conn = $this->connect();
        try {
            $this->send($conn, ['v' => 1, 'type' => 'status', 'req' => 'status']);
            $rec = $this->answer($conn, 'status', 30);
            if ($rec['type'] !== 'status') {
                throw new ProtocolViolation("the node answered a status request with a {$rec['type']} record");
            }
            return $rec;
        } finally {
            fclose($conn);
        }
    }

    /**
     * A page of the node's receipt log (docs/local-api.md, `receipts`): the entries after
     * sequence number `$after` (entries are numbered from 0; null starts at the first), at
     * most `$limit` (≤ 1000). Page on with `$after` = the previous page's `last`. Each
     * entry's `envelope` is the signed receipt: check it with
     * Receipt::fromEnvelope($e['envelope'])->verify(...).
     *
     * @return array{entries: list<JsonObject>, last: ?int, more: bool}
     */
    public function receipts(?int $after = null, int $limit = 100): array
    {
        $request = ['v' => 1, 'type' => 'receipts', 'req' => 'receipts', 'limit' => $limit, 'verify' => false];
        if ($after !== null) {
            $request['after'] = $after;
        }
        $conn = $this->connect();
        try {
            $this->send($conn, $request);
            $entries = [];
            while (true) {
                $rec = $this->answer($conn, 'receipts', 60);
                if ($rec['type'] === 'receipt_entry') {
                    $entries[] = $rec;
                } elseif ($rec['type'] === 'receipts_end') {
                    $last = is_int($rec['last']) ? $rec['last'] : $after;
                    return ['entries' => $entries, 'last' => $last, 'more' => $rec['more'] === true];
                }
            }
        } finally {
            fclose($conn);
        }
    }

    public function workerKey(): ?string
    {
        if ($this->nodeId === null) {
            $id = $this->status()['node_id'];
            if (!is_string($id) || preg_match('/\A[0-9a-f]{64}\z/', $id) !== 1) {
                throw new ProtocolViolation('the node\'s status has no node_id');
            }
            $this->nodeId = $id;
        }
        return $this->nodeId;
    }

    public function run(Job $job, ?callable $onProgress = null): array
    {
        $req = 'php-' . getmypid() . '-' . (++$this->seq);
        $request = ['v' => 1, 'type' => 'submit', 'req' => $req, 'module' => $this->moduleSpec($job),
                    'where' => $job->where];
        $stdin = $this->stdinSpec($job);
        if ($stdin !== null) {
            $request['stdin'] = $stdin;
        }
        if ($this->submitter !== null) {
            $request['manifest'] = $this->manifest($job)->sign($this->submitter);
        } else {
            $request += ['args' => $job->args, 'argv0' => $job->argv0, 'env' => new JsonObject($job->env),
                         'limits' => new JsonObject($job->limits), 'deterministic' => $job->deterministic,
                         'submitter' => 'node'];
        }
        $wallS = intdiv((int) ($job->limits['wall_ms'] ?? Manifest::DEFAULT_LIMITS['wall_ms']), 1000);
        $conn = $this->connect();
        try {
            $this->send($conn, $request);
            $manifest = null;
            while (true) {
                $rec = $this->answer($conn, $req, $wallS + 60);
                switch ($rec['type']) {
                    case 'job_accepted':
                        $manifest = $rec['manifest'] instanceof JsonObject ? $rec['manifest'] : null;
                        break;
                    case 'job_progress':
                        if ($onProgress !== null) {
                            $onProgress($rec);
                        }
                        break;
                    case 'job_result':
                        return ['result' => $rec, 'manifest' => $manifest,
                                'stdout' => self::b64($rec, 'stdout'), 'stderr' => self::b64($rec, 'stderr')];
                    default:
                        break; // a record type this SDK does not know: skipped, as every reader does
                }
            }
        } finally {
            fclose($conn); // closing the connection cancels an unfinished job
        }
    }

    private function manifest(Job $job): Manifest
    {
        $module = $job->moduleId ?? Json::contentId((string) $job->moduleBytes());
        $stdin = $job->stdinBytes();
        return Manifest::build(module: $module, stdin: $stdin === null ? null : Json::contentId($stdin),
            argv: [$job->argv0, ...$job->args], env: $job->env, limits: $job->limits,
            deterministic: $job->deterministic);
    }

    /** @return array<string, string> */
    private function moduleSpec(Job $job): array
    {
        if ($job->modulePath !== null && !$this->inline) {
            return ['path' => $job->modulePath];
        }
        $bytes = $job->moduleBytes();
        if ($bytes !== null) {
            return ['b64' => base64_encode($bytes)];
        }
        return ['content_id' => (string) $job->moduleId];
    }

    /** @return array<string, string>|null */
    private function stdinSpec(Job $job): ?array
    {
        if ($job->stdinPath !== null && !$this->inline) {
            return ['path' => $job->stdinPath];
        }
        $bytes = $job->stdinBytes();
        return $bytes === null ? null : ['b64' => base64_encode($bytes)];
    }

    private static function b64(JsonObject $rec, string $name): string
    {
        $text = $rec["{$name}_b64"] ?? '';
        $bytes = is_string($text) ? base64_decode($text, true) : false;
        if ($bytes === false) {
            throw new ProtocolViolation("the node's job_result has no valid {$name}_b64");
        }
        return $bytes;
    }

    /** @return resource */
    private function connect()
    {
        $candidates = [];
        if ($this->socket !== null) {
            $candidates[] = $this->socket;
        } else {
            $home = Home::resolve($this->home);
            $path = Home::socketPath($home);
            $candidates[] = file_exists($path) ? $path : Home::abstractName($home);
        }
        $where = str_starts_with($candidates[0], "\0") ? '@' . substr($candidates[0], 1) : $candidates[0];
        $conn = @stream_socket_client('unix://' . $candidates[0], $errno, $errstr, $this->connectTimeoutS);
        if ($conn === false) {
            throw new Unavailable("no plasmd is running with its control socket at {$where} ({$errstr})", null,
                'start one with `plasmd start`, or pass its home');
        }
        return $conn;
    }

    /** @param resource $conn */
    private function send($conn, array $request): void
    {
        $line = Json::encode($request) . "\n";
        for ($off = 0; $off < strlen($line); $off += $n) {
            $n = @fwrite($conn, substr($line, $off, 1 << 20));
            if ($n === false || $n === 0) {
                throw new Unavailable('the node closed its control socket while the request was sent');
            }
        }
    }

    /**
     * The next record for `$req`; an `error` record is thrown as its PhaseException.
     *
     * @param resource $conn
     */
    private function answer($conn, string $req, int $timeoutS): JsonObject
    {
        stream_set_timeout($conn, max(1, $timeoutS));
        $lines = new JsonLines($conn, 'the node');
        while (true) {
            $rec = $lines->next();
            if ($rec === null) {
                if (stream_get_meta_data($conn)['timed_out']) {
                    throw new TempFailure("no answer from the node within {$timeoutS} s", 'timeout');
                }
                throw new Unavailable('the node closed its control socket before it answered',
                    null, 'is the node shutting down? see its log');
            }
            if ($rec->has('req') && $rec['req'] !== $req) {
                continue;
            }
            if ($rec['type'] === 'error') {
                throw Error\PhaseException::fromRecord($rec->toArray());
            }
            return $rec;
        }
    }
}
