<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Client;
use Phase\Error\PhaseException;
use Phase\Job;
use Phase\Key;
use Phase\Keyring;
use Phase\ProcessTransport;
use PHPUnit\Framework\TestCase;

/**
 * End to end with a real plasm-exec: $PHASE_TEST_PLASM_EXEC (its path) and
 * $PHASE_TEST_WASM (the folder of example modules, packages/plasm-exec/examples/build).
 * tests/sdk_php/test_php_sdk.py sets both and fails on a skipped test.
 */
final class ProcessTransportTest extends TestCase
{
    private string $exec;
    private string $wasm;
    private string $home;

    protected function setUp(): void
    {
        $exec = getenv('PHASE_TEST_PLASM_EXEC');
        $wasm = getenv('PHASE_TEST_WASM');
        if (!is_string($exec) || $exec === '' || !is_string($wasm) || $wasm === '') {
            self::markTestSkipped('set PHASE_TEST_PLASM_EXEC and PHASE_TEST_WASM to run plasm-exec');
        }
        $this->exec = $exec;
        $this->wasm = $wasm;
        $this->home = sys_get_temp_dir() . '/phase-php-test-' . bin2hex(random_bytes(6));
        mkdir($this->home, 0o700);
    }

    protected function tearDown(): void
    {
        if (isset($this->home) && is_dir($this->home)) {
            exec('rm -rf ' . escapeshellarg($this->home));
        }
    }

    public function testHelloWithAVerifiedReceipt(): void
    {
        $transport = new ProcessTransport($this->exec, $this->home);
        $client = new Client($transport);
        $progress = [];
        $result = $client->submit(Job::fromFile("{$this->wasm}/hello.wasm")->withStdin('Hello, World'),
            function ($rec) use (&$progress) {
                $progress[] = $rec['stage'];
            });
        self::assertSame('dlroW ,olleH', $result->stdout);
        self::assertTrue($result->ok());
        self::assertSame($transport->workerKey(), $result->worker);
        self::assertSame(['running'], $progress);
        // verified again offline, against the worker key alone
        $ring = Keyring::empty()->withKey('w', $transport->workerKey(), ['worker']);
        self::assertSame($result->job, $result->verify($ring)->body['job']);
        // and the receipt does not pass for other output
        $forged = new \Phase\Result($result->job, 'Hello, World', '', 'exited', 0, $result->receipt,
            $result->manifest, $result->worker);
        self::assertSame('wrong_stdout', Support::slugOf(fn () => $forged->verify($ring)));
    }

    public function testModuleBytesArgsEnvAndASubmitterKey(): void
    {
        $keyFile = "{$this->home}/submitter.key";
        $seed = random_bytes(32);
        $pub = bin2hex(\Phase\Crypto::publicKey($seed));
        file_put_contents($keyFile, json_encode(['v' => 1, 'type' => 'secret_key', 'alg' => 'ed25519',
            'seed' => bin2hex($seed), 'key' => $pub]));
        chmod($keyFile, 0o600);
        $client = new Client(new ProcessTransport($this->exec, $this->home, Key::load($keyFile)));
        $job = Job::fromBytes(file_get_contents("{$this->wasm}/printenv.wasm"), 'printenv.wasm')
            ->withEnv(['GREETING' => 'hi/there'])->deterministic();
        $result = $client->submit($job);
        self::assertStringContainsString('GREETING=hi/there', $result->stdout);
        self::assertSame($pub, $result->manifest['signatures'][0]['key']);
        self::assertTrue($result->receipt->body()['deterministic']);
    }

    public function testAFailingGuestIsAResultNotAnException(): void
    {
        $client = new Client(new ProcessTransport($this->exec, $this->home));
        $result = $client->submit(Job::fromFile("{$this->wasm}/trap.wasm"));
        self::assertSame('trapped', $result->ended);
        self::assertFalse($result->ok());
    }

    public function testABadModuleCarriesTheToolsSlug(): void
    {
        $client = new Client(new ProcessTransport($this->exec, $this->home));
        try {
            $client->submit(Job::fromBytes('not wasm at all'));
            self::fail('a bad module ran');
        } catch (PhaseException $e) {
            self::assertSame(65, $e->getExitCode(), (string) $e);
        }
    }

    public function testAMissingPlasmExecIsUnavailable(): void
    {
        $client = new Client(new ProcessTransport('/nonexistent/plasm-exec', $this->home));
        self::assertSame('unavailable', Support::slugOf(fn () => $client->submit(Job::fromFile("{$this->wasm}/hello.wasm"))));
    }
}
