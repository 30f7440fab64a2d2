<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Documents;
use Phase\Keyring;
use PHPUnit\Framework\TestCase;

/**
 * Every checked-in vector gets the verdict its name states (tests/vectors/README.md):
 * valid/ verifies, invalid/<slug>--<what>.json is refused with <slug>. The pytest
 * suite (tests/sdk_php) also compares each verdict with phase-verify's.
 */
final class DocumentsTest extends TestCase
{
    /** @return iterable<string, array{string, string}> */
    public static function vectors(): iterable
    {
        foreach (glob(Support::vectors() . '/valid/*.json') as $f) {
            yield 'valid/' . basename($f) => [$f, 'ok'];
        }
        foreach (glob(Support::vectors() . '/invalid/*.json') as $f) {
            yield 'invalid/' . basename($f) => [$f, explode('--', basename($f))[0]];
        }
    }

    /** @dataProvider vectors */
    public function testVectorVerdict(string $file, string $slug): void
    {
        $ring = Keyring::load(Support::vectors() . '/keyring.toml');
        self::assertSame($slug, Support::slugOf(fn () => Documents::verify(file_get_contents($file), $ring)));
    }

    public function testThereAreManyVectors(): void
    {
        self::assertGreaterThanOrEqual(29, iterator_count(self::vectors()));
    }

    public function testValidityWindowWithNow(): void
    {
        $ring = Keyring::load(Support::vectors() . '/keyring.toml');
        $doc = file_get_contents(Support::vectors() . '/valid/job_manifest.json');
        $at = fn (string $t) => Support::slugOf(fn () => Documents::verify($doc, $ring, \Phase\Time::parse($t)));
        self::assertSame('ok', $at('2099-12-30T23:59:59Z'));
        self::assertSame('expired', $at('2099-12-31T00:00:00Z'));
        self::assertSame('not_yet_valid', $at('1999-12-31T00:00:00Z'));
    }

    public function testVerifiedDocument(): void
    {
        $ring = Keyring::load(Support::vectors() . '/keyring.toml');
        $v = Documents::verify(file_get_contents(Support::vectors() . '/valid/boot_manifest.json'), $ring);
        self::assertSame('boot_manifest', $v->type);
        self::assertSame(['boot-1', 'boot-2'], array_values(array_intersect(['boot-1', 'boot-2'], $v->signers)));
        self::assertMatchesRegularExpression('/\Asha256:[0-9a-f]{64}\z/', $v->id);
        self::assertSame('threshold', Support::slugOf(fn () => Documents::verify(
            file_get_contents(Support::vectors() . '/valid/boot_manifest.json'), $ring, threshold: 3)));
    }

    public function testAnEmptyKeyringTrustsNobody(): void
    {
        self::assertSame('untrusted_signer', Support::slugOf(fn () => Documents::verify(
            file_get_contents(Support::vectors() . '/valid/receipt.json'), Keyring::empty())));
    }
}
