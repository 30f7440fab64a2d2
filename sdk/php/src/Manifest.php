<?php

declare(strict_types=1);

namespace Phase;

/**
 * A job manifest body (docs/documents.md, "Documents"; docs/schemas/job_manifest.schema.json),
 * built and checked like phase-core's manifest.build(), with its canonical bytes, id and
 * signature.
 *
 *     $m = Manifest::build(module: Json::contentId($wasm), stdin: Json::contentId($in));
 *     $envelope = $m->sign($key);          // {"v":1,"type":"job_manifest",...}
 *     $m->id();                            // "sha256:…", the job id a receipt names
 */
final class Manifest
{
    public const TYPE = 'job_manifest';
    public const DEFAULT_LIFETIME_S = 3600;
    public const DEFAULT_LIMITS = ['memory_bytes' => 256 << 20, 'fuel' => 10_000_000_000,
                                   'wall_ms' => 30_000, 'output_bytes' => 16 << 20];

    private function __construct(public readonly JsonObject $body)
    {
    }

    /**
     * @param list<string> $argv the guest's argv, argv[0] first (default ["main.wasm"])
     * @param array<string, string> $env
     * @param array<string, int> $limits any of memory_bytes, fuel, wall_ms, output_bytes
     * @param array<string, mixed> $requirements arch, runtime, cpu_cores, memory_bytes, features
     * @param int|null $now Unix seconds (default: the clock)
     */
    public static function build(string $module, ?string $stdin = null, ?array $argv = null, array $env = [],
                                 array $limits = [], array $requirements = [], bool $deterministic = false,
                                 int $lifetimeS = self::DEFAULT_LIFETIME_S, ?string $nonce = null,
                                 ?string $name = null, ?int $now = null): self
    {
        $now ??= time();
        $body = [
            'module' => $module,
            'stdin' => $stdin,
            'argv' => array_values($argv ?? ['main.wasm']),
            'env' => new JsonObject($env),
            'limits' => new JsonObject($limits + self::DEFAULT_LIMITS),
            'requirements' => new JsonObject($requirements),
            'nonce' => $nonce ?? bin2hex(random_bytes(16)),
            'created' => Time::format($now),
            'expires' => Time::format($now + $lifetimeS),
        ];
        if ($deterministic) {
            $body['deterministic'] = true;
        }
        if ($name !== null) {
            $body['name'] = $name;
        }
        return self::fromBody(new JsonObject($body));
    }

    /** A manifest from a body (parsed JSON or a PHP array), checked against the schema. */
    public static function fromBody(JsonObject|array $body): self
    {
        // Canonical bytes, parsed back: the schema sees exactly what a verifier will see.
        $parsed = Json::parse(Json::encode($body));
        if (!$parsed instanceof JsonObject) {
            throw new Error\InputError('a job manifest body must be a JSON object', 'malformed');
        }
        Bodies::check(self::TYPE, $parsed);
        $created = Time::parse($parsed['created']);
        if (Time::parse($parsed['expires']) <= $created) {
            throw new Error\InputError('job_manifest expires before it is created', 'malformed');
        }
        return new self($parsed);
    }

    /** The canonical bytes of the body. */
    public function canonical(): string
    {
        return Json::encode($this->body);
    }

    /** The bytes every signature covers: "phase:job_manifest:v1\n" + canonical(body). */
    public function signingMessage(): string
    {
        return Envelope::signingMessage(self::TYPE, $this->body);
    }

    /** The job id: the content id of the signing message. */
    public function id(): string
    {
        return Json::contentId($this->signingMessage());
    }

    /** The signed envelope (one signature per key). */
    public function sign(Key ...$keys): JsonObject
    {
        return Envelope::sign(self::TYPE, $this->body, ...array_map(fn (Key $k) => $k->seed(), $keys));
    }
}
