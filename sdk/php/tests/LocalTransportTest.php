<?php

declare(strict_types=1);

namespace Phase\Tests;

use Phase\Client;
use Phase\Error\PhaseException;
use Phase\Job;
use Phase\Key;
use Phase\Keyring;
use Phase\LocalTransport;
use PHPUnit\Framework\TestCase;

/**
 * Against a running plasmd (docs/local-api.md): $PHASE_TEST_NODE_HOME is its home and
 * $PHASE_TEST_WASM the folder of example modules. tests/sdk_php starts the node with
 * `plasmd start` and runs this group.
 *
 * @group local-node
 */
final class LocalTransportTest extends TestCase
{
    private string $home;
    private string $wasm;

    protected function setUp(): void
    {
        $home = getenv('PHASE_TEST_NODE_HOME');
        $wasm = getenv('PHASE_TEST_WASM');
        if (!is_string($home) || $home === '' || !is_string($wasm) || $wasm === '') {
            self::markTestSkipped('set PHASE_TEST_NODE_HOME (a running node) and PHASE_TEST_WASM');
        }
        $this->home = $home;
        $this->wasm = $wasm;
    }

    public function testStatusAndWorkerKey(): void
    {
        $t = new LocalTransport(home: $this->home);
        $status = $t->status();
        self::assertSame('status', $status['type']);
        self::assertSame($status['node_id'], $t->workerKey());
    }

    public function testHelloByPathWithProgress(): void
    {
        $stages = [];
        $client = Client::local($this->home);
        $result = $client->submit(Job::fromFile("{$this->wasm}/hello.wasm")->withStdin('Hello, World'),
            function ($rec) use (&$stages) {
                $stages[] = $rec['stage'];
            });
        self::assertSame('dlroW ,olleH', $result->stdout);
        self::assertTrue($result->ok());
        self::assertContains('running', $stages);
        self::assertSame((new LocalTransport(home: $this->home))->workerKey(), $result->worker);
        self::assertSame($result->manifest['body']['module'], \Phase\Json::contentId(file_get_contents("{$this->wasm}/hello.wasm")));
    }

    public function testInlineModuleAndStdin(): void
    {
        $client = new Client(new LocalTransport(home: $this->home, inline: true));
        $result = $client->submit(Job::fromBytes(file_get_contents("{$this->wasm}/hello.wasm"), 'hello.wasm')
            ->withStdin('Hello, World'));
        self::assertSame('dlroW ,olleH', $result->stdout);
        self::assertSame(['hello.wasm'], $result->manifest['body']['argv']);
    }

    public function testAFailingGuestIsAResult(): void
    {
        $result = Client::local($this->home)->submit(Job::fromFile("{$this->wasm}/trap.wasm"));
        self::assertSame('trapped', $result->ended);
        self::assertFalse($result->ok());
    }

    public function testAManifestSignedHere(): void
    {
        $key = new Key(random_bytes(32));
        $client = new Client(new LocalTransport(home: $this->home, submitter: $key));
        $result = $client->submit(Job::fromFile("{$this->wasm}/printenv.wasm")->withEnv(['GREETING' => 'hi/there']));
        self::assertStringContainsString('GREETING=hi/there', $result->stdout);
        self::assertSame($key->publicHex, $result->manifest['signatures'][0]['key']);
    }

    public function testNodeErrorsCarryTheirSlugs(): void
    {
        try {
            Client::local($this->home)->submit(Job::fromContentId('sha256:' . str_repeat('0', 64)));
            self::fail('a module the node does not have ran');
        } catch (PhaseException $e) {
            self::assertSame('missing_input', $e->getSlug());
            self::assertSame(66, $e->getExitCode());
        }
    }

    public function testAReceiptFromAnUntrustedWorkerIsRefusedHere(): void
    {
        $someoneElse = Keyring::empty()->withKey('other', str_repeat('ab', 32), ['worker']);
        $client = new Client(new LocalTransport(home: $this->home), $someoneElse);
        self::assertSame('untrusted_signer',
            Support::slugOf(fn () => $client->submit(Job::fromFile("{$this->wasm}/hello.wasm"))));
    }

    public function testTheReceiptLogHoldsTheJobsReceipt(): void
    {
        $t = new LocalTransport(home: $this->home);
        $result = (new Client($t))->submit(Job::fromFile("{$this->wasm}/hello.wasm")->withStdin('log me'));
        $ring = Keyring::empty()->withKey('node', $t->workerKey(), ['worker']);
        $found = null;
        $after = null;
        do {
            $page = $t->receipts($after, 1000);
            foreach ($page['entries'] as $e) {
                if ($e['job'] === $result->job) {
                    $found = $e;
                }
            }
            $after = $page['last'];
        } while ($page['more']);
        self::assertNotNull($found, 'the job is not in the receipt log');
        $v = \Phase\Receipt::fromEnvelope($found['envelope'])->verify($ring, $result->manifest, $result->stdout);
        self::assertSame($result->receipt->envelope['body']['job'], $v->body['job']);
    }

    public function testNoNodeIsUnavailable(): void
    {
        $t = new LocalTransport(home: sys_get_temp_dir() . '/no-phase-node-' . bin2hex(random_bytes(4)));
        self::assertSame('unavailable', Support::slugOf(fn () => $t->status()));
    }
}
