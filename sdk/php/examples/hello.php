<?php

/*
 * Submit hello.wasm to the local Phase node with the stdin "Hello, World", print the
 * guest's output and check the signed receipt.
 *
 *   plasmd init && plasmd start &          # a node for $PHASE_HOME
 *   php examples/hello.php [hello.wasm]
 *
 * Prints "dlroW ,olleH" and "receipt verified". The receipt is verified here, offline:
 * the node's Ed25519 signature and its binding to this job's manifest, module, stdin
 * and the output bytes printed.
 */

declare(strict_types=1);

require is_file(__DIR__ . '/../vendor/autoload.php') ? __DIR__ . '/../vendor/autoload.php'
    : __DIR__ . '/../autoload.php';

use Phase\Client;
use Phase\Error\PhaseException;
use Phase\Job;

$module = $argv[1] ?? dirname(__DIR__, 3) . '/packages/plasm-exec/examples/build/hello.wasm';
try {
    $client = Client::local();           // the node of $PHASE_HOME; it is the trusted worker
    $result = $client->submit(Job::fromFile($module)->withStdin('Hello, World'));
    echo $result->stdout, "\n";
    echo "receipt verified\n";
    fwrite(STDERR, "job {$result->job}, worker {$result->worker}, ended {$result->ended}\n");
} catch (PhaseException $e) {
    fwrite(STDERR, "hello.php: {$e->getSlug()}: {$e->getMessage()}" . ($e->hint ? " ({$e->hint})" : '') . "\n");
    exit($e->getExitCode());
}
