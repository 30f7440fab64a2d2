<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\IOFailure;
use Phase\Error\MissingInput;

/**
 * What to run: a WASI module, its stdin, arguments, environment, limits and profile.
 * Immutable; each with*() returns a copy.
 *
 *     $job = Job::fromFile('hello.wasm')->withStdin("Hello, World")->withArgs(['-n']);
 */
final class Job
{
    public const MAX_MODULE_BYTES = 64 << 20;
    public const MAX_STDIN_BYTES = 256 << 20;

    /** @var list<string> */
    public array $args = [];
    /** @var array<string, string> */
    public array $env = [];
    /** @var array<string, int> */
    public array $limits = [];
    public bool $deterministic = false;
    public ?string $stdin = null;
    public ?string $stdinPath = null;
    /** @var array<string, mixed> where it runs on a node (docs/local-api.md, `where`) */
    public array $where = ['node' => 'self'];

    private function __construct(
        public readonly ?string $modulePath,
        private ?string $moduleBytes,
        public readonly ?string $moduleId,
        public readonly string $argv0,
    ) {
    }

    /** A module file (read by the node for a local node, by plasm-exec for a process). */
    public static function fromFile(string $path): self
    {
        if (!is_file($path)) {
            throw new MissingInput("no such module file: {$path}");
        }
        $abs = realpath($path);
        return new self($abs === false ? $path : $abs, null, null, basename($path));
    }

    /** Module bytes held in memory (sent inline to a node). */
    public static function fromBytes(string $wasm, string $argv0 = 'module.wasm'): self
    {
        return new self(null, $wasm, Json::contentId($wasm), $argv0);
    }

    /** A module already in the node's content store. */
    public static function fromContentId(string $contentId, string $argv0 = 'module.wasm'): self
    {
        if (!Json::isContentId($contentId)) {
            throw new Error\InputError("{$contentId} is not a content id sha256:<64 lowercase hex>", 'bad_content_id');
        }
        return new self(null, null, $contentId, $argv0);
    }

    public function withStdin(string $bytes): self
    {
        $c = clone $this;
        $c->stdin = $bytes;
        $c->stdinPath = null;
        return $c;
    }

    public function withStdinFile(string $path): self
    {
        if (!is_file($path)) {
            throw new MissingInput("no such stdin file: {$path}");
        }
        $c = clone $this;
        $c->stdinPath = realpath($path) ?: $path;
        $c->stdin = null;
        return $c;
    }

    /** @param list<string> $args the guest's arguments after argv[0] */
    public function withArgs(array $args): self
    {
        $c = clone $this;
        $c->args = array_values(array_map('strval', $args));
        return $c;
    }

    /** @param array<string, string> $env */
    public function withEnv(array $env): self
    {
        $c = clone $this;
        $c->env = array_map('strval', $env);
        return $c;
    }

    /** @param array<string, int> $limits any of memory_bytes, fuel, wall_ms, output_bytes */
    public function withLimits(array $limits): self
    {
        $c = clone $this;
        $c->limits = $limits;
        return $c;
    }

    public function deterministic(bool $on = true): self
    {
        $c = clone $this;
        $c->deterministic = $on;
        return $c;
    }

    /** @param array<string, mixed> $where `['node' => 'self']`, `['peer' => 'id@host:port']`, `['capabilities' => [...]]` */
    public function on(array $where): self
    {
        $c = clone $this;
        $c->where = $where;
        return $c;
    }

    /** The module's bytes (read from its file when it has one), or null for a content id. */
    public function moduleBytes(): ?string
    {
        if ($this->moduleBytes === null && $this->modulePath !== null) {
            $this->moduleBytes = self::read($this->modulePath, self::MAX_MODULE_BYTES, 'module');
        }
        return $this->moduleBytes;
    }

    /** The stdin bytes, or null when the job has no input. */
    public function stdinBytes(): ?string
    {
        if ($this->stdinPath !== null) {
            return self::read($this->stdinPath, self::MAX_STDIN_BYTES, 'stdin');
        }
        return $this->stdin;
    }

    private static function read(string $path, int $cap, string $what): string
    {
        $data = @file_get_contents($path, false, null, 0, $cap + 1);
        if ($data === false) {
            throw new IOFailure("cannot read the {$what} file {$path}", null, null, ['path' => $path]);
        }
        if (strlen($data) > $cap) {
            throw new Error\InputError("the {$what} file {$path} is over {$cap} bytes", 'too_large');
        }
        return $data;
    }
}
