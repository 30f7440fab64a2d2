<?php

/*
 * Test helper: one base64 line of JSON text in, one line out: `ok <base64 of the
 * canonical bytes>` or `err <slug>`. tests/sdk_php runs it beside phase-core's encoder.
 */

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

while (($line = fgets(STDIN)) !== false) {
    $text = base64_decode(trim($line), true);
    try {
        $bytes = Phase\Json::encode(Phase\Json::parse((string) $text));
        echo 'ok ', base64_encode($bytes), "\n";
    } catch (Phase\Error\PhaseException $e) {
        echo 'err ', $e->getSlug(), "\n";
    }
}
