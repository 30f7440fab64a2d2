<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Error\InputError;
use Phase\Json;
use Phase\JsonObject;
use PHPUnit\Framework\TestCase;

/** The canonical JSON rules of docs/documents.md, one by one. */
final class JsonTest extends TestCase
{
    public function testNoWhitespaceAndSortedKeys(): void
    {
        $v = Json::parse("{ \"b\" : 1 ,\n \"A\": 2, \"_\": 3, \"a\": [1, 2] }");
        self::assertSame('{"A":2,"_":3,"a":[1,2],"b":1}', Json::encode($v));
    }

    public function testEmptyObjectStaysAnObjectAndEmptyArrayAnArray(): void
    {
        self::assertSame('{"a":{},"b":[]}', Json::encode(Json::parse('{"a":{},"b":[]}')));
        self::assertSame('{"env":{}}', Json::encode(['env' => new JsonObject()]));
        self::assertNotSame('{"env":{}}', json_encode(['env' => []]), 'json_encode is not canonical');
    }

    public function testIntegerLikeKeysStayStrings(): void
    {
        $v = Json::parse('{"10":1,"9":2,"1":3,"":4}');
        self::assertSame('{"":4,"1":3,"10":1,"9":2}', Json::encode($v));
        self::assertSame(['', '1', '10', '9'], (function () use ($v) {
            $k = $v->keys();
            sort($k, SORT_STRING);
            return $k;
        })());
    }

    public function testStringEscapes(): void
    {
        $s = "q\" b\\ \x08\x0c\n\r\t \x00\x1b\x1f / \x7f \u{2028}\u{2029}\u{feff} é 😀";
        self::assertSame('"q\\" b\\\\ \\b\\f\\n\\r\\t \\u0000\\u001b\\u001f / ' . "\x7f \u{2028}\u{2029}\u{feff} é 😀" . '"',
            Json::encode($s));
    }

    public function testIntegersAndTheirRange(): void
    {
        self::assertSame('[0,-1,9007199254740991,-9007199254740991]',
            Json::encode(Json::parse('[-0, -1, 9007199254740991, -9007199254740991]')));
        foreach (['9007199254740992', '-9007199254740992', '12345678901234567890'] as $big) {
            self::assertSame('malformed', Support::slugOf(fn () => Json::parse($big)), $big);
        }
        self::assertSame('malformed', Support::slugOf(fn () => Json::encode(PHP_INT_MAX)));
    }

    public function testFloatsNanAndInfinityAreRefused(): void
    {
        foreach (['1.0', '1e3', '1E-2', '-0.5', 'NaN', 'Infinity', '-Infinity', '[1,2.5]'] as $text) {
            self::assertSame('malformed', Support::slugOf(fn () => Json::parse($text)), $text);
        }
        self::assertSame('malformed', Support::slugOf(fn () => Json::encode(1.0)));
    }

    public function testInputRules(): void
    {
        $bad = [
            'duplicate key' => '{"a":1,"a":2}',
            'duplicate key by escape' => '{"a":1,"\u0061":2}',
            'non-ASCII key' => '{"é":1}',
            'escaped non-ASCII key' => '{"\u00e9":1}',
            'lone high surrogate' => '["\ud800"]',
            'lone low surrogate' => '["\udc00"]',
            'reversed pair' => '["\udc00\ud800"]',
            'byte-order mark' => "\xEF\xBB\xBF{}",
            'not UTF-8' => "[\"\xff\"]",
            'UTF-8 of a surrogate' => "[\"\xed\xa0\x80\"]",
            'raw control character' => "[\"a\x01\"]",
            'bad escape' => '["\x"]',
            'leading zero' => '[01]',
            'trailing comma' => '[1,]',
            'extra data' => '{} {}',
            'empty' => " \n",
            'truncated' => '{"a":',
            'single quotes' => "{'a':1}",
        ];
        foreach ($bad as $what => $text) {
            self::assertSame('malformed', Support::slugOf(fn () => Json::parse($text)), $what);
        }
        self::assertSame('😀', Json::parse('"\ud83d\ude00"'));
    }

    public function testDepthCap(): void
    {
        self::assertSame(str_repeat('[', 32) . str_repeat(']', 32),
            Json::encode(Json::parse(str_repeat('[', 32) . str_repeat(']', 32))));
        self::assertSame('malformed', Support::slugOf(fn () => Json::parse(str_repeat('[', 33) . str_repeat(']', 33))));
        $deep = [];
        for ($i = 0; $i < 32; $i++) {
            $deep = [$deep];
        }
        self::assertSame('malformed', Support::slugOf(fn () => Json::encode($deep)));
    }

    public function testSizeCap(): void
    {
        $this->expectException(InputError::class);
        try {
            Json::parse('"' . str_repeat('a', 100) . '"', 64);
        } catch (InputError $e) {
            self::assertSame('too_large', $e->getSlug());
            self::assertSame(65, $e->getExitCode());
            throw $e;
        }
    }

    public function testInvalidUtf8IsRefusedOnEncode(): void
    {
        self::assertSame('malformed', Support::slugOf(fn () => Json::encode("\xed\xa0\x80")));
        self::assertSame('malformed', Support::slugOf(fn () => Json::encode(['é' => 1])));
    }

    public function testContentId(): void
    {
        self::assertSame('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', Json::contentId(''));
        self::assertTrue(Json::isContentId(Json::contentId('x')));
        self::assertFalse(Json::isContentId('SHA256:' . str_repeat('a', 64)));
    }
}
