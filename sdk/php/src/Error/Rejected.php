<?php

declare(strict_types=1);

namespace Phase\Error;

/** A document, receipt or job result that is not acceptable: bad_signature, untrusted_signer, threshold, expired, not_yet_valid, wrong_type, wrong_stdout, job_failed, ... (exit 1). */
class Rejected extends PhaseException
{
    public const EXIT_CODE = 1;
    public const SLUG = 'rejected';
}
