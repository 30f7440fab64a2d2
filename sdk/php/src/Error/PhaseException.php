<?php

declare(strict_types=1);

namespace Phase\Error;

/**
 * Base of every error the SDK raises on purpose, mirroring phase-core's PhaseError tree.
 *
 * Each error carries the stable slug of the Python tools (the `error` field of their
 * error records, docs/conventions.md), the exit code that slug maps to, an optional
 * hint (what to try) and details (such as `field` or `path`). Catch a category
 * (Rejected, InputError, Unavailable, ...) or this class, and branch on getSlug().
 */
class PhaseException extends \RuntimeException
{
    public const EXIT_CODE = 70;
    public const SLUG = 'error';

    /** Exit code => category class, for error records that come from a tool or a node. */
    private const BY_EXIT = [
        1 => Rejected::class, 64 => UsageError::class, 65 => InputError::class,
        66 => MissingInput::class, 69 => Unavailable::class, 70 => InternalError::class,
        74 => IOFailure::class, 75 => TempFailure::class, 76 => ProtocolViolation::class,
        78 => ConfigError::class, 130 => Interrupted::class,
    ];

    public readonly string $slug;
    public readonly ?string $hint;
    /** @var array<string, mixed> */
    public readonly array $details;

    /** @param array<string, mixed> $details */
    public function __construct(string $message, ?string $slug = null, ?string $hint = null,
                                array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, static::EXIT_CODE, $previous);
        $this->slug = $slug ?? static::SLUG;
        $this->hint = $hint;
        $this->details = $details;
    }

    public function getSlug(): string
    {
        return $this->slug;
    }

    public function getExitCode(): int
    {
        return static::EXIT_CODE;
    }

    public function getHint(): ?string
    {
        return $this->hint;
    }

    /** The error record the Python tools would write for this error. */
    public function toRecord(): array
    {
        $rec = ['error' => $this->slug, 'message' => $this->getMessage(),
                'exit_code' => static::EXIT_CODE];
        if ($this->hint !== null) {
            $rec['hint'] = $this->hint;
        }
        return $rec + $this->details;
    }

    /**
     * The exception for an `error` record written by a Phase tool or node
     * (`{"type":"error","error":slug,"message":...,"exit_code":n,"hint":...}`).
     *
     * @param array<string, mixed> $record
     */
    public static function fromRecord(array $record): self
    {
        $code = is_int($record['exit_code'] ?? null) ? $record['exit_code'] : 70;
        $class = self::BY_EXIT[$code] ?? InternalError::class;
        $slug = is_string($record['error'] ?? null) ? substr($record['error'], 0, 64) : $class::SLUG;
        $message = is_string($record['message'] ?? null) ? substr($record['message'], 0, 2048)
            : "the node reported {$slug}";
        $hint = is_string($record['hint'] ?? null) ? substr($record['hint'], 0, 2048) : null;
        $details = array_diff_key($record, ['v' => 1, 'type' => 1, 'error' => 1,
                                            'message' => 1, 'exit_code' => 1, 'hint' => 1]);
        return new $class($message, $slug, $hint, $details);
    }

    public function __toString(): string
    {
        $text = static::class . " [{$this->slug}]: " . $this->getMessage();
        return $this->hint !== null ? "{$text} ({$this->hint})" : $text;
    }
}
