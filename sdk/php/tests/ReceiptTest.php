<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Error\Rejected;
use Phase\Json;
use Phase\Keyring;
use Phase\Receipt;
use PHPUnit\Framework\TestCase;

/** Receipt::verify on the vector receipt: signature, trusted worker, bindings. */
final class ReceiptTest extends TestCase
{
    private Keyring $ring;
    private string $receipt;
    private string $manifest;

    protected function setUp(): void
    {
        $this->ring = Keyring::load(Support::vectors() . '/keyring.toml');
        $this->receipt = file_get_contents(Support::vectors() . '/valid/receipt.json');
        $this->manifest = file_get_contents(Support::vectors() . '/valid/job_manifest.json');
    }

    private function verify(string $receipt, array $args = []): string
    {
        $args += ['manifest' => $this->manifest, 'stdout' => 'dlroW ,olleH', 'stderr' => '',
                  'stdin' => 'Hello, World', 'module' => 'hello.wasm bytes'];
        return Support::slugOf(fn () => Receipt::fromEnvelope($receipt)->verify($this->ring, ...$args));
    }

    public function testGenuineReceiptWithEveryBinding(): void
    {
        self::assertSame('ok', $this->verify($this->receipt));
        $v = Receipt::fromEnvelope($this->receipt)->verify($this->ring);
        self::assertSame(['5c2c45d1782354315efd8b6ab3bab11bd1db4810f3e49efadc96ed64755a5461' => 'worker'], $v->signers);
    }

    public function testSwappedStdoutIsRejected(): void
    {
        self::assertSame('wrong_stdout', $this->verify($this->receipt, ['stdout' => 'Hello, World']));
        self::assertSame('wrong_stdout', $this->verify($this->receipt, ['stdout' => 'dlroW ,olleH!']));
        try {
            Receipt::fromEnvelope($this->receipt)->verify($this->ring, stdout: 'x');
            self::fail('a swapped stdout passed');
        } catch (Rejected $e) {
            self::assertSame(1, $e->getExitCode());
            self::assertSame('stdout', $e->details['field']);
        }
    }

    public function testOtherBindings(): void
    {
        self::assertSame('wrong_stderr', $this->verify($this->receipt, ['stderr' => 'warning']));
        self::assertSame('wrong_stdin', $this->verify($this->receipt, ['stdin' => 'Hello']));
        self::assertSame('wrong_module', $this->verify($this->receipt, ['module' => 'other.wasm']));
        self::assertSame('wrong_worker', $this->verify($this->receipt, ['worker' => str_repeat('ab', 32)]));
        $other = Json::parse($this->manifest);
        $other['body']['nonce'] = str_repeat('0', 32);
        self::assertSame('wrong_job', $this->verify($this->receipt, ['manifest' => $other]));
    }

    public function testTamperedReceiptIsRejected(): void
    {
        $env = Json::parse($this->receipt);
        $env['body']['exit_code'] = 1;
        self::assertSame('bad_signature', $this->verify(Json::encode($env)));
        $env = Json::parse($this->receipt);
        $env['body']['stdout'] = Json::contentId('forged output');
        $env['body']['stdout_bytes'] = 13;
        self::assertSame('bad_signature', $this->verify(Json::encode($env), ['stdout' => 'forged output']));
    }

    public function testUntrustedWorker(): void
    {
        self::assertSame('untrusted_signer',
            Support::slugOf(fn () => Receipt::fromEnvelope($this->receipt)->verify(Keyring::empty())));
        $notWorker = Keyring::empty()->withKey('w', '5c2c45d1782354315efd8b6ab3bab11bd1db4810f3e49efadc96ed64755a5461',
            ['job-submitter']);
        self::assertSame('untrusted_signer',
            Support::slugOf(fn () => Receipt::fromEnvelope($this->receipt)->verify($notWorker)));
    }

    public function testAJobManifestIsNotAReceipt(): void
    {
        self::assertSame('wrong_type', Support::slugOf(fn () => Receipt::fromEnvelope($this->manifest)->verify($this->ring)));
    }
}
