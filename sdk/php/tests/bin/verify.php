<?php

/*
 * Test helper: verify signed documents with the PHP SDK and print one JSON line per
 * file: {"file":…,"verdict":"ok"|slug,"exit_code":n,"type":…,"id":…}.
 *
 *   php verify.php [--keys=KEYRING] [--now=RFC3339] [--manifest=F] [--stdout=F]
 *                  [--stderr=F] [--stdin=F] [--module=F] FILE...
 *
 * With any of --manifest/--stdout/--stderr/--stdin/--module, each FILE is taken as a
 * receipt and Receipt::verify checks those bindings too.
 */

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

use Phase\Error\PhaseException;

$opts = [];
$files = [];
foreach (array_slice($argv, 1) as $arg) {
    if (preg_match('/\A--(keys|now|manifest|stdout|stderr|stdin|module)=(.*)\z/s', $arg, $m) === 1) {
        $opts[$m[1]] = $m[2];
    } else {
        $files[] = $arg;
    }
}
$read = fn (string $name) => isset($opts[$name]) ? file_get_contents($opts[$name]) : null;
$status = 0;
foreach ($files as $file) {
    $rec = ['file' => $file];
    try {
        $ring = isset($opts['keys']) ? Phase\Keyring::load($opts['keys']) : Phase\Keyring::empty();
        $now = isset($opts['now']) ? Phase\Time::parse($opts['now'], '--now') : null;
        $data = file_get_contents($file);
        $bindings = array_intersect_key($opts, array_flip(['manifest', 'stdout', 'stderr', 'stdin', 'module']));
        if ($bindings) {
            $v = Phase\Receipt::fromEnvelope($data)->verify($ring, $read('manifest'), $read('stdout'),
                $read('stderr'), $read('stdin'), $read('module'), now: $now);
        } else {
            $v = Phase\Documents::verify($data, $ring, $now);
        }
        $rec += ['verdict' => 'ok', 'exit_code' => 0, 'doc_type' => $v->type, 'id' => $v->id];
    } catch (PhaseException $e) {
        $rec += ['verdict' => $e->getSlug(), 'exit_code' => $e->getExitCode(), 'message' => $e->getMessage()];
        $status = max($status, $e->getExitCode());
    }
    echo json_encode($rec, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
}
exit($status);
