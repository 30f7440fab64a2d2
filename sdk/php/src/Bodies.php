<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;

/**
 * The body schema of each document type (docs/documents.md, "Documents";
 * docs/schemas/*.schema.json), the same rules as phase-core's manifest.py,
 * receipt.py, records.py and boot.py.
 *
 * @internal used by Documents and Manifest
 */
final class Bodies
{
    public const ENDED = ['exited', 'trapped', 'out_of_fuel', 'timeout', 'memory_limit', 'output_limit'];
    private const MAX_WALL_MS = 7 * 24 * 3600 * 1000;
    private const TIB = 1 << 40;

    /** @var array<string, \Closure> */
    private static array $checks = [];

    public static function check(string $type, JsonObject $body): void
    {
        $check = self::checks()[$type] ?? null;
        if ($check === null) {
            throw new \InvalidArgumentException("no body schema for {$type}");
        }
        $check($body, $type);
        if ($type === 'receipt') {
            if ($body['ended'] === 'exited' && $body['exit_code'] === null) {
                throw Schema::fail('receipt.exit_code', 'an exited run has an exit code');
            }
            if ($body['ended'] === 'trapped' && $body['trap'] === null) {
                throw Schema::fail('receipt.trap', 'a trapped run names its trap');
            }
        }
    }

    /** @return array<string, \Closure> */
    private static function checks(): array
    {
        if (self::$checks) {
            return self::$checks;
        }
        $cid = Schema::contentId();
        $limits = Schema::obj([
            'memory_bytes' => Schema::integer(65536, self::TIB),
            'fuel' => Schema::integer(1),
            'wall_ms' => Schema::integer(1, self::MAX_WALL_MS),
            'output_bytes' => Schema::integer(0, self::TIB),
        ]);
        $runtime = Schema::obj(['name' => Schema::string(32, '[a-z0-9_.-]+'),
                                'version' => Schema::string(64, '[A-Za-z0-9_.+-]+')]);
        $features = Schema::array(Schema::string(64, '[a-z0-9_.-]+'), 32, 0, true);
        $artifact = Schema::obj(['id' => $cid, 'size' => Schema::integer(1, 4 << 30)]);
        $address = Schema::array(static function (mixed $v, string $where): void {
            self::address($v, $where);
        }, 16);
        return self::$checks = [
            'job_manifest' => Schema::obj([
                'module' => $cid,
                'stdin' => Schema::nullable($cid),
                'argv' => Schema::array(Schema::cString(4096), 256),
                'env' => Schema::strMap(Schema::string(256, '[A-Za-z_][A-Za-z0-9_]*'), Schema::cString(4096), 256),
                'limits' => $limits,
                'requirements' => Schema::obj([], [
                    'arch' => Schema::string(32, '[a-z0-9_]+'),
                    'runtime' => Schema::string(32, '[a-z0-9_.-]+'),
                    'cpu_cores' => Schema::integer(1, 4096),
                    'memory_bytes' => Schema::integer(0),
                    'features' => $features,
                ]),
                'nonce' => Schema::string(64, '[0-9a-f]{32,64}'),
                'created' => Schema::time(),
                'expires' => Schema::time(),
            ], ['deterministic' => Schema::boolean(), 'name' => Schema::string(128)]),
            'receipt' => Schema::obj([
                'job' => $cid, 'module' => $cid, 'stdin' => $cid, 'stdout' => $cid, 'stderr' => $cid,
                'stdout_bytes' => Schema::integer(0), 'stderr_bytes' => Schema::integer(0),
                'exit_code' => Schema::nullable(Schema::integer(0, 255)),
                'ended' => Schema::oneOf(...self::ENDED),
                'trap' => Schema::nullable(Schema::string(64, '[a-z0-9_]+')),
                'fuel_consumed' => Schema::integer(0),
                'fuel_exact' => Schema::boolean(),
                'wall_ms' => Schema::integer(0),
                'limits' => $limits,
                'runtime' => $runtime,
                'deterministic' => Schema::boolean(),
                'worker' => Schema::nodeId(),
                'completed' => Schema::time(),
            ]),
            'node_record' => Schema::obj([
                'node_id' => Schema::nodeId(),
                'addresses' => $address,
                'capabilities' => Schema::obj([
                    'arch' => Schema::string(16, '[a-z0-9_]+'),
                    'cpu_cores' => Schema::integer(1, 4096),
                    'memory_bytes' => Schema::integer(0),
                    'runtimes' => Schema::array($runtime, 8),
                    'features' => $features,
                ], ['memory_available_bytes' => Schema::integer(0)], true),
                'seq' => Schema::integer(0),
                'created' => Schema::time(),
                'expires' => Schema::time(),
            ], ['observed_addresses' => $address,
                'reachability' => Schema::oneOf('public', 'private', 'unknown')]),
            'boot_manifest' => Schema::obj([
                'channel' => Schema::string(32, '[a-z0-9][a-z0-9._-]*', 1),
                'arch' => Schema::string(16, 'x86_64|aarch64|riscv64'),
                'version' => Schema::integer(1),
                'created' => Schema::time(),
                'expires' => Schema::time(),
                'kernel' => $artifact,
                'initramfs' => $artifact,
                'cmdline' => Schema::string(4096, '[^\x00-\x1f\x7f]*'),
                'mirrors' => Schema::array(Schema::string(2048, 'https?://[^\s\x00-\x1f\x7f]+'), 32, 0, true),
            ], ['rootfs' => $artifact, 'providers' => Schema::array(Schema::nodeId(), 32, 0, true)]),
        ];
    }

    /** A node's dialable address: `host:port` or `[IPv6]:port` (docs/documents.md, "Node-record addresses"). */
    public static function address(mixed $v, string $where): void
    {
        $label = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
        $port = '(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})';
        $re = "/\\A(?:\\[[0-9A-Fa-f:.]{2,45}\\]|{$label}(?:\\.{$label})*):{$port}\\z/";
        if (!is_string($v) || strlen($v) > 64 || preg_match($re, $v) !== 1) {
            throw Schema::fail($where, substr(json_encode($v, JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES) ?: '?', 0, 80)
                . ' is not host:port or [IPv6]:port (no scheme; port 1..65535)');
        }
        $host = substr($v, 0, strrpos($v, ':'));
        $ok = true;
        if (str_starts_with($host, '[')) {
            $ok = self::ipv6(substr($host, 1, -1));
        } elseif (preg_match('/\A[0-9.]+\z/', $host) === 1) {
            $ok = filter_var($host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV4) !== false
                && preg_match('/(\A|\.)0[0-9]/', $host) !== 1;
        } elseif (strlen($host) > 253) {
            $ok = false;
        }
        if (!$ok) {
            throw Schema::fail($where, json_encode($v) . ' does not hold a valid IP address');
        }
    }

    /** An IPv6 literal as Python's ipaddress.IPv6Address takes it (no zone id). */
    private static function ipv6(string $h): bool
    {
        return filter_var($h, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6) !== false;
    }

    public static function malformed(string $message): InputError
    {
        return new InputError($message, 'malformed');
    }
}
