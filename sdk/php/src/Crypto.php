<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\InputError;
use Phase\Error\Rejected;

/**
 * Ed25519 with libsodium's acceptance rule (docs/documents.md, "Signature verification").
 *
 * sodium_crypto_sign_verify_detached is libsodium's crypto_sign_verify_detached, the
 * same function phase-core reaches through PyNaCl: it refuses a public key or an R that
 * is of small order or not canonically encoded, and an S that is not below L. The
 * checks on the key and on S are also made here, before libsodium is asked, so the
 * verdict does not depend on how the libsodium PHP links to was built.
 */
final class Crypto
{
    public const PUBLIC_BYTES = 32;
    public const SEED_BYTES = 32;
    public const SIGNATURE_BYTES = 64;

    /** L, the order of the base point, little-endian. */
    private const L = "\xed\xd3\xf5\x5c\x1a\x63\x12\x58\xd6\x9c\xf7\xa2\xde\xf9\xde\x14"
        . "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10";

    /**
     * Encodings (sign bit cleared) of the points of order 1, 2, 4 and 8: y = 0, 1,
     * p - 1, the two y of the order-8 points, and the non-canonical p and p + 1.
     */
    private const SMALL_ORDER = [
        '0000000000000000000000000000000000000000000000000000000000000000',
        '0100000000000000000000000000000000000000000000000000000000000000',
        '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
        'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
        'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
        'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
        'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    ];

    /** Return if `$signature` is valid for `$message` under `$public`; else throw bad_signature. */
    public static function verify(string $public, string $message, string $signature): void
    {
        if (strlen($public) !== self::PUBLIC_BYTES) {
            throw new InputError('public key must be 32 bytes', 'malformed');
        }
        if (strlen($signature) !== self::SIGNATURE_BYTES) {
            throw new InputError('signature must be 64 bytes', 'malformed');
        }
        if (!self::isCanonicalPoint($public) || self::hasSmallOrder($public)
            || !self::isCanonicalPoint(substr($signature, 0, 32))
            || self::hasSmallOrder(substr($signature, 0, 32))
            || !self::isBelowL(substr($signature, 32))
            || !sodium_crypto_sign_verify_detached($signature, $message, $public)) {
            throw new Rejected('signature does not verify', 'bad_signature');
        }
    }

    /** The Ed25519 public key (32 raw bytes) of a 32-byte seed. */
    public static function publicKey(string $seed): string
    {
        $kp = self::keypair($seed);
        return sodium_crypto_sign_publickey($kp);
    }

    /** Plain Ed25519 (no pre-hash) signature of `$message` with the key of `$seed`. */
    public static function sign(string $seed, string $message): string
    {
        $kp = self::keypair($seed);
        $sig = sodium_crypto_sign_detached($message, sodium_crypto_sign_secretkey($kp));
        sodium_memzero($kp);
        return $sig;
    }

    private static function keypair(string $seed): string
    {
        if (strlen($seed) !== self::SEED_BYTES) {
            throw new InputError('secret key must be 32 bytes', 'malformed');
        }
        return sodium_crypto_sign_seed_keypair($seed);
    }

    /** The y coordinate (top bit cleared) is below p = 2^255 - 19. */
    private static function isCanonicalPoint(string $p): bool
    {
        if ((ord($p[31]) & 0x7f) !== 0x7f) {
            return true;
        }
        for ($i = 30; $i >= 1; $i--) {
            if ($p[$i] !== "\xff") {
                return true;
            }
        }
        return ord($p[0]) < 0xed;
    }

    private static function hasSmallOrder(string $p): bool
    {
        $cleared = substr($p, 0, 31) . chr(ord($p[31]) & 0x7f);
        return in_array(bin2hex($cleared), self::SMALL_ORDER, true);
    }

    /** S (little-endian) < L. */
    private static function isBelowL(string $s): bool
    {
        for ($i = 31; $i >= 0; $i--) {
            $a = ord($s[$i]);
            $b = ord(self::L[$i]);
            if ($a !== $b) {
                return $a < $b;
            }
        }
        return false;
    }
}
