<?php

declare(strict_types=1);

/*
 * PSR-4 autoloader for using the SDK without Composer:
 *     require '/path/to/sdk/php/autoload.php';
 * With Composer, use vendor/autoload.php instead (composer.json maps Phase\ to src/).
 */
spl_autoload_register(static function (string $class): void {
    if (!str_starts_with($class, 'Phase\\')) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 6)) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
