<?php

/*
 * Test helper: run one job with the PHP SDK's ProcessTransport (plasm-exec job) and
 * print one JSON line: the verified result, with the signed manifest and receipt.
 *
 *   php run.php PLASM_EXEC HOME MODULE [STDIN_FILE]
 */

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

[, $exec, $home, $module] = $argv;
$job = Phase\Job::fromFile($module);
if (isset($argv[4])) {
    $job = $job->withStdinFile($argv[4]);
}
try {
    $transport = new Phase\ProcessTransport($exec, $home);
    $result = (new Phase\Client($transport))->submit($job);
    echo Phase\Json::encode([
        'type' => 'php_result', 'job' => $result->job, 'worker' => $result->worker,
        'ended' => $result->ended, 'exit_code' => $result->exitCode,
        'stdout_b64' => base64_encode($result->stdout), 'stderr_b64' => base64_encode($result->stderr),
        'manifest' => $result->manifest, 'receipt' => $result->receipt->envelope,
    ]), "\n";
} catch (Phase\Error\PhaseException $e) {
    echo Phase\Json::encode(['type' => 'error'] + $e->toRecord()), "\n";
    exit($e->getExitCode());
}
