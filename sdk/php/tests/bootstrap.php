<?php

declare(strict_types=1);

error_reporting(E_ALL);
set_error_handler(static function (int $no, string $msg, string $file, int $line): bool {
    if ((error_reporting() & $no) === 0) {
        return false; // silenced with @ where the SDK checks the result itself
    }
    throw new ErrorException($msg, 0, $no, $file, $line); // a notice or warning fails the test
});

if (is_file(__DIR__ . '/../vendor/autoload.php')) {
    require __DIR__ . '/../vendor/autoload.php';
} else {
    require __DIR__ . '/../autoload.php';
}
require __DIR__ . '/Support.php';
