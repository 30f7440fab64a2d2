<?php

declare(strict_types=1);

namespace Phase;

use Phase\Error\ProtocolViolation;

/**
 * Reads JSON-lines records (one object per line, with "v" and "type") from a stream,
 * with a cap on each line. Blank lines are skipped.
 *
 * @internal used by the transports
 */
final class JsonLines
{
    public const MAX_LINE_BYTES = 64 << 20;

    /** @param resource $stream */
    public function __construct(private $stream, private string $peer, private int $maxLine = self::MAX_LINE_BYTES)
    {
    }

    /** The next record, or null at end of stream. */
    public function next(): ?JsonObject
    {
        while (true) {
            $line = '';
            while (!str_ends_with($line, "\n")) {
                $chunk = fgets($this->stream, 1 << 20);
                if ($chunk === false) {
                    if ($line === '') {
                        return null;
                    }
                    break; // a last line without its newline
                }
                $line .= $chunk;
                if (strlen($line) > $this->maxLine) {
                    throw new ProtocolViolation("{$this->peer} sent a line over {$this->maxLine} bytes");
                }
            }
            if (trim($line) === '') {
                continue;
            }
            try {
                $rec = Json::parseRecord(rtrim($line, "\r\n"), $this->maxLine);
            } catch (Error\InputError $e) {
                throw new ProtocolViolation("{$this->peer} sent a line that is not JSON: {$e->getMessage()}");
            }
            if (!$rec instanceof JsonObject || !is_string($rec['type'])) {
                throw new ProtocolViolation("{$this->peer} sent a record that is not an object with a type");
            }
            return $rec;
        }
    }
}
