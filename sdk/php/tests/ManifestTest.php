<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Documents;
use Phase\Envelope;
use Phase\Json;
use Phase\Key;
use Phase\Keyring;
use Phase\Manifest;
use PHPUnit\Framework\TestCase;

final class ManifestTest extends TestCase
{
    private const T0 = 1795750004; // 2026-11-27T03:26:44Z

    /** The vector manifest's body, rebuilt here, has the vector's id (so byte-equal canonical bytes). */
    public function testRebuildsTheVectorManifestByteForByte(): void
    {
        $env = Json::parse(file_get_contents(Support::vectors() . '/valid/job_manifest.json'));
        $b = $env['body'];
        $m = Manifest::build(module: $b['module'], stdin: $b['stdin'], argv: $b['argv'],
            env: $b['env']->toArray(), limits: $b['limits']->toArray(),
            requirements: $b['requirements']->toArray(), nonce: $b['nonce'],
            lifetimeS: \Phase\Time::parse($b['expires']) - \Phase\Time::parse($b['created']),
            now: \Phase\Time::parse($b['created']));
        self::assertSame(Json::encode($b), $m->canonical());
        self::assertSame(Envelope::documentId('job_manifest', $b), $m->id());
    }

    public function testSignedManifestVerifies(): void
    {
        $key = new Key(hash('sha256', 'manifest-test', true));
        $m = Manifest::build(module: Json::contentId('wasm'), stdin: null, argv: ['hello.wasm', 'a/b'],
            env: [], now: self::T0, name: "line\u{2028}sep/slash");
        self::assertStringContainsString('"env":{}', $m->canonical());
        self::assertStringContainsString('"requirements":{}', $m->canonical());
        self::assertStringContainsString("line\u{2028}sep/slash", $m->canonical());
        $ring = Keyring::empty()->withKey('me', $key->publicHex, ['job-submitter']);
        $v = Documents::verify($m->sign($key), $ring, self::T0 + 10);
        self::assertSame($m->id(), $v->id);
        self::assertSame('expired', Support::slugOf(fn () => Documents::verify($m->sign($key), $ring, self::T0 + 3600)));
    }

    public function testBadFieldsAreRefused(): void
    {
        $cid = Json::contentId('wasm');
        $bad = [
            'env name' => fn () => Manifest::build(module: $cid, env: ['1X' => 'v']),
            'NUL in argv' => fn () => Manifest::build(module: $cid, argv: ["x\0B=evil"]),
            'NUL in env' => fn () => Manifest::build(module: $cid, env: ['A' => "x\0"]),
            'module id' => fn () => Manifest::build(module: 'sha256:ABC'),
            'tiny memory' => fn () => Manifest::build(module: $cid, limits: ['memory_bytes' => 1]),
            'unknown limit' => fn () => Manifest::build(module: $cid, limits: ['cpu' => 1]),
            'float limit' => fn () => Manifest::build(module: $cid, limits: ['fuel' => 1.5]),
            'nonce' => fn () => Manifest::build(module: $cid, nonce: 'xyz'),
            'lifetime' => fn () => Manifest::build(module: $cid, lifetimeS: 0),
        ];
        foreach ($bad as $what => $fn) {
            self::assertSame('malformed', Support::slugOf($fn), $what);
        }
    }
}
