<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Crypto;
use PHPUnit\Framework\TestCase;

/** Ed25519 under libsodium's rule (docs/documents.md, "Signature verification"). */
final class CryptoTest extends TestCase
{
    private const L = '1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed';

    public function testSignAndVerify(): void
    {
        $seed = hash('sha256', 'crypto-test', true);
        $sig = Crypto::sign($seed, 'message');
        self::assertSame('ok', Support::slugOf(fn () => Crypto::verify(Crypto::publicKey($seed), 'message', $sig)));
        self::assertSame('bad_signature',
            Support::slugOf(fn () => Crypto::verify(Crypto::publicKey($seed), 'messagE', $sig)));
    }

    public function testSmallOrderForgeryIsRefused(): void
    {
        // A = identity, R = identity, S = 0: passes the plain RFC 8032 equation for every message.
        $identity = "\x01" . str_repeat("\x00", 31);
        $sig = $identity . str_repeat("\x00", 32);
        foreach (['', 'any message', 'phase:node_record:v1\n{}'] as $msg) {
            self::assertSame('bad_signature', Support::slugOf(fn () => Crypto::verify($identity, $msg, $sig)));
        }
    }

    public function testNonCanonicalSIsRefused(): void
    {
        $seed = hash('sha256', 'crypto-test-s', true);
        $sig = Crypto::sign($seed, 'm');
        $s = self::addLe(substr($sig, 32), strrev(hex2bin(self::L)));
        self::assertSame(32, strlen($s), 'S + L still fits in 32 bytes for this S');
        self::assertSame('bad_signature',
            Support::slugOf(fn () => Crypto::verify(Crypto::publicKey($seed), 'm', substr($sig, 0, 32) . $s)));
    }

    public function testNonCanonicalKeyIsRefused(): void
    {
        // y = p + 2 (not below p), with a signature that is otherwise well-formed
        $key = "\xef" . str_repeat("\xff", 30) . "\x7f";
        $seed = hash('sha256', 'x', true);
        self::assertSame('bad_signature', Support::slugOf(fn () => Crypto::verify($key, 'm', Crypto::sign($seed, 'm'))));
    }

    private static function addLe(string $a, string $b): string
    {
        $out = '';
        $carry = 0;
        for ($i = 0; $i < 32; $i++) {
            $t = ord($a[$i]) + ord($b[$i]) + $carry;
            $out .= chr($t & 0xff);
            $carry = $t >> 8;
        }
        return $carry ? $out . "\x01" : $out;
    }
}
