<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InternalError;
use Phase\Error\PhaseException;
use Phase\Error\ProtocolViolation;
use Phase\Error\Unavailable;

/**
 * Runs jobs on this machine with `plasm-exec job`, no node needed (docs/plasm-exec.md).
 *
 * The SDK builds the job manifest (Manifest), signs it with the submitter key (by
 * default the home's node key, `<home>/key`, which `plasm-exec key` makes when there
 * is none), and writes one `job` record (manifest, module_path, stdin_path) to
 * `plasm-exec job`. It reads the JSON lines it answers: a `job_result` with the
 * receipt signed by this machine's worker key, or an `error` record, thrown with its
 * slug. The guest's output comes inline, or from the home's content store when it
 * is over 64 KiB.
 */
final class ProcessTransport implements Transport
{
    private ?string $worker = null;

    /**
     * @param string $plasmExec the plasm-exec command (a path, or a name looked up in PATH)
     * @param string|null $home the Phase home (default: as the tools resolve it)
     * @param Key|null $submitter the key that signs job manifests (default: the home's node key)
     * @param list<string> $options more plasm-exec options, e.g. ['--max-memory=64M'] (ceilings)
     */
    public function __construct(
        private string $plasmExec = 'plasm-exec',
        private ?string $home = null,
        private ?Key $submitter = null,
        private array $options = [],
    ) {
    }

    /** This machine's worker key (the node id that signs the receipts). */
    public function workerKey(): string
    {
        if ($this->worker === null) {
            [$code, $out, $err] = $this->exec(['key', '--name=worker'], '');
            if ($code !== 0) {
                throw $this->failure($code, $out, $err);
            }
            $ring = Keyring::parse($out, 'plasm-exec key');
            $keys = array_keys($ring->keys());
            if (count($keys) !== 1) {
                throw new ProtocolViolation('plasm-exec key did not print one key');
            }
            $this->worker = $keys[0];
        }
        return $this->worker;
    }

    public function run(Job $job, ?callable $onProgress = null): array
    {
        $key = $this->submitter;
        if ($key === null) {
            $this->workerKey(); // makes the node key when there is none
            $key = Key::load(Home::keyPath($this->home()));
        }
        $tmp = [];
        try {
            $modulePath = $job->modulePath;
            $moduleBytes = $job->moduleBytes();
            if ($modulePath === null && $moduleBytes !== null) {
                $modulePath = $tmp[] = self::tempFile($moduleBytes);
            }
            $stdin = $job->stdinBytes();
            $stdinPath = $job->stdinPath;
            if ($stdinPath === null && $stdin !== null) {
                $stdinPath = $tmp[] = self::tempFile($stdin);
            }
            $manifest = Manifest::build(
                module: $job->moduleId ?? Json::contentId((string) $moduleBytes),
                stdin: $stdin === null ? null : Json::contentId($stdin),
                argv: [$job->argv0, ...$job->args], env: $job->env, limits: $job->limits,
                deterministic: $job->deterministic);
            $envelope = $manifest->sign($key);
            $record = ['v' => 1, 'type' => 'job', 'manifest' => $envelope, 'module_path' => $modulePath,
                       'stdin_path' => $stdinPath];
            if ($onProgress !== null) {
                $onProgress(new JsonObject(['v' => 1, 'type' => 'job_progress', 'job' => $manifest->id(),
                                            'stage' => 'running']));
            }
            [$code, $out, $err] = $this->exec(['job', ...$this->options], Json::encode($record) . "\n");
        } finally {
            foreach ($tmp as $f) {
                @unlink($f);
            }
        }
        $result = null;
        $error = null;
        foreach (preg_split('/\n/', $out) as $line) {
            if (trim($line) === '') {
                continue;
            }
            $rec = Json::parseRecord($line, JsonLines::MAX_LINE_BYTES);
            if (!$rec instanceof JsonObject) {
                continue;
            }
            if ($rec['type'] === 'job_result' && $result === null) {
                $result = $rec;
            } elseif ($rec['type'] === 'error' && $rec['error'] !== 'job_failed' && $error === null) {
                $error = $rec;
            }
        }
        if ($error !== null) {
            throw PhaseException::fromRecord($error->toArray());
        }
        if ($result === null) {
            throw $this->failure($code, $out, $err);
        }
        return ['result' => $result, 'manifest' => $envelope,
                'stdout' => $this->output($result, 'stdout'), 'stderr' => $this->output($result, 'stderr')];
    }

    private function home(): string
    {
        return Home::resolve($this->home);
    }

    private function output(JsonObject $rec, string $name): string
    {
        if (is_string($rec["{$name}_b64"])) {
            $bytes = base64_decode($rec["{$name}_b64"], true);
            if ($bytes === false) {
                throw new ProtocolViolation("plasm-exec wrote a bad {$name}_b64");
            }
            return $bytes;
        }
        $id = $rec["{$name}_id"];
        if (!Json::isContentId($id)) {
            throw new ProtocolViolation("plasm-exec's job_result has no {$name}_id");
        }
        $bytes = @file_get_contents(Home::casPath($this->home(), $id));
        if ($bytes === false) {
            throw new Unavailable("the {$name} of the job ({$id}) is not in the content store of {$this->home()}");
        }
        return $bytes; // the receipt's binding check compares its id
    }

    /** @return array{0: int, 1: string, 2: string} exit code, stdout, stderr */
    private function exec(array $args, string $input): array
    {
        $cmd = [$this->plasmExec, ...$args];
        if ($this->home !== null) {
            $cmd[] = '--home=' . $this->home;
        }
        $errFile = tmpfile();
        $proc = @proc_open($cmd, [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => $errFile], $pipes);
        if (!is_resource($proc)) {
            throw new Unavailable("cannot run {$this->plasmExec}", null,
                'install plasm-exec (pipx install ./packages/plasm-exec) or pass its path');
        }
        fwrite($pipes[0], $input);
        fclose($pipes[0]);
        $out = stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        $code = proc_close($proc);
        rewind($errFile);
        $err = (string) stream_get_contents($errFile);
        fclose($errFile);
        if ($code === 127) {
            throw new Unavailable("cannot run {$this->plasmExec}: not found", null,
                'install plasm-exec (pipx install ./packages/plasm-exec) or pass its path');
        }
        return [$code, (string) $out, $err];
    }

    /** The error a failed plasm-exec run reported in its last error log line. */
    private function failure(int $code, string $out, string $err): PhaseException
    {
        foreach (array_reverse(preg_split('/\n/', $err)) as $line) {
            $rec = json_decode($line, true);
            if (is_array($rec) && isset($rec['error']) && is_string($rec['error'])) {
                $rec['exit_code'] ??= $code;
                return PhaseException::fromRecord($rec);
            }
        }
        return new InternalError("plasm-exec exited with {$code} without a result: " . substr(trim($err), -500));
    }

    private static function tempFile(string $bytes): string
    {
        $path = tempnam(sys_get_temp_dir(), 'phase-');
        if ($path === false || file_put_contents($path, $bytes) !== strlen($bytes)) {
            throw new Error\IOFailure('cannot write a temporary file in ' . sys_get_temp_dir());
        }
        return $path;
    }
}
