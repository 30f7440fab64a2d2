<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Keyring;
use PHPUnit\Framework\TestCase;

/** The keyring TOML the Phase tools write (docs/documents.md, "Keyring"). */
final class KeyringTest extends TestCase
{
    private const K1 = '8274c65d030b81fbd819916874159bbe92403355edc1ea490e7bae5e60da9586';
    private const K2 = '5c2c45d1782354315efd8b6ab3bab11bd1db4810f3e49efadc96ed64755a5461';

    public function testTheVectorKeyring(): void
    {
        $ring = Keyring::load(Support::vectors() . '/keyring.toml');
        self::assertTrue($ring->allows(self::K1, 'job-submitter'));
        self::assertFalse($ring->allows(self::K1, 'worker'));
        self::assertTrue($ring->allows(self::K2, 'worker'));
        self::assertSame(2, $ring->threshold('boot-signer'));
        self::assertSame(1, $ring->threshold('worker'));
        self::assertSame('submitter', $ring->nameOf(self::K1));
    }

    public function testQuotedNamesCommentsAndMultiLineArrays(): void
    {
        $ring = Keyring::parse("# comment\n[keys.\"release.1\"]  # trailing\nkey = \"" . self::K1 . "\"\n"
            . "roles = [\n  \"boot-signer\",  # the only role\n  'worker',\n]\n");
        self::assertSame('release.1', $ring->nameOf(self::K1));
        self::assertTrue($ring->allows(self::K1, 'worker'));
    }

    public function testRefusals(): void
    {
        $entry = fn (string $extra = '', string $key = self::K1) => "[keys.a]\nkey = \"{$key}\"\nroles = [\"worker\"]\n{$extra}";
        $bad = [
            'unknown field' => $entry('comment = "x"'),
            'bad role' => "[keys.a]\nkey = \"" . self::K1 . "\"\nroles = [\"admin\"]\n",
            'key listed twice' => $entry() . "[keys.b]\nkey = \"" . self::K1 . "\"\nroles = []\n",
            'uppercase key' => $entry('', strtoupper(self::K1)),
            'unknown section' => "[other]\nx = 1\n",
            'threshold out of range' => "[thresholds]\nworker = 17\n",
            'threshold for an unknown role' => "[thresholds]\nadmin = 1\n",
            'not TOML' => "[keys.a\n",
            'a table twice' => $entry() . $entry(),
            'inline table' => "keys = { a = 1 }\n",
        ];
        foreach ($bad as $what => $text) {
            self::assertSame('bad_config', Support::slugOf(fn () => Keyring::parse($text)), $what);
        }
        self::assertSame('missing_input', Support::slugOf(fn () => Keyring::load('/nonexistent/keyring.toml')));
    }

    public function testWithKey(): void
    {
        $ring = Keyring::empty()->withKey('local', self::K2, ['worker']);
        self::assertTrue($ring->allows(self::K2, 'worker'));
        self::assertFalse(Keyring::empty()->allows(self::K2, 'worker'));
    }
}
