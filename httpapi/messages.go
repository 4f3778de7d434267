package httpapi

// Every message a client can be sent (docs/ERRORS.md lists them all; a test
// checks that it does).
const (
	// Routing and bodies (§1.1).
	msgNotFound         = "Not found"
	msgMethodNotAllowed = "Method not allowed"
	msgInternal         = "Internal server error"
	msgInvalidJSON      = "Invalid JSON body"
	msgBodyTooLarge     = "Request body too large"
	msgInvalidMultipart = "Invalid multipart body"
	msgNotMultipart     = "Content must be multipart/form-data"
	msgNotForm          = "Content must be application/x-www-form-urlencoded"

	// Credentials and identity claims (§1.2).
	msgMissingKey        = "Missing X-API-Key header"
	msgInvalidKey        = "Invalid API key"
	msgMissingKeyOrToken = "Missing X-API-Key or X-Build-Token header"
	msgBadToken          = "Invalid or expired build token"
	msgMissingWorkerID   = "Missing X-Worker-Id header"
	msgMissingBuildID    = "Missing X-Build-Id header"
	msgBuildIDMismatch   = "X-Build-Id header does not match build ID in URL"
	msgWorkerIDRequired  = "worker_id required"
	msgInvalidWait       = "Invalid wait"
	msgInvalidAfter      = "Invalid after"
	msgInvalidLimit      = "Invalid limit"
	msgInvalidFilter     = "Invalid filter" // GET /api/builds: status, platform or worker_id
	msgInvalidBefore     = "Invalid before" // GET /api/builds: not the id of a build
	msgTooManyStreams    = "Too many log streams"
	msgLogsBusy          = "Too many log lines waiting, retry later"

	// A volume under --min-free-disk, or full (§1.1): nothing was stored.
	msgInsufficientStorage = "Insufficient storage"

	// The newer worker generation's credentials (§4.12–§4.14).
	msgBadWorkerToken      = "Invalid or expired worker token"
	msgWorkerTokenMismatch = "Worker token does not match worker_id"
	msgBadVMToken          = "Invalid or expired VM token"
	msgMissingVMToken      = "Missing X-VM-Token header"
	msgMissingOTP          = "Missing required parameter: otp"
	msgInvalidOTP          = "Invalid OTP"
	msgOTPExpired          = "OTP expired"
	msgNoArtifact          = "No artifact file provided"

	// Records.
	msgBuildNotFound  = "Build not found"
	msgWorkerNotFound = "Worker not found"

	// The three refusals of a worker that is not the build's assignee; each
	// route keeps the wording its clients know (§4.3–§4.8).
	msgWorkerNotAuthorized = "Worker not authorized for this build"
	msgWorkerNotAssigned   = "Worker not assigned to this build"
	msgNotAssignedToWorker = "Build not assigned to this worker"

	// Builds (§2).
	msgSourceTooLarge    = "Source file too large"
	msgCertsTooLarge     = "Certs file too large"
	msgSourceRequired    = "Source file required"
	msgInvalidPlatform   = "Valid platform required (ios|android)"
	msgSignInRequired    = "Sign-in required"
	msgBadFormToken      = "Invalid or expired form; reload the page"
	msgTooManySignIns    = "Too many sign-in attempts"
	msgWrongKey          = "Wrong key"
	msgKeyRequired       = "Admin key required"
	msgInvalidIDPrefix   = "Invalid id prefix (hex digits and dashes)"
	msgInvalidLabel      = "Invalid label (at most 100 characters, no control characters)"
	msgBuildNotCompleted = "Build not completed"
	msgResultNotFound    = "Build result not found"
	msgSourceNotFound    = "Source file not found"
	msgInvalidFileType   = "Invalid file type"
	msgBuildFinished     = "Build already finished"
	msgBuildInProgress   = "Build is still in progress"
	msgSourceGone        = "Original build source no longer available. Please submit a new build."
	msgTooManyRetries    = "Too many retries"
	msgFilesExpired      = "Build files expired" // retention took them (410)

	// Workers (§4).
	msgNameAndCapabilities = "Name and capabilities required"
	msgCertsNotFound       = "Certs not found"
	msgInvalidLogBody      = "Invalid body. Expected { level, message } or { logs: [...] }"
	msgInvalidLogLevel     = "Invalid log level. Must be: info, warn, or error"
	msgInvalidProgress     = "progress must be a number between 0 and 100"
	msgInvalidTelemetry    = "Invalid telemetry data"
	msgResultTooLarge      = "Result file too large"
	msgUploadIDsRequired   = "build_id and worker_id required"
	msgDiagnosticFields    = "Missing required fields: worker_id, status, duration_ms, checks"
	msgDiagnosticStatus    = "Invalid status. Must be: healthy, warning, or critical"
	msgChecksNotArray      = "checks must be an array"
	msgNoDiagnostics       = "No diagnostic reports found"
	msgTooManyRequests     = "Too many requests"

	// Health (§3.1); these go in {"status": "error", "error": ...}.
	msgDatabaseUnavailable = "Database unavailable"
	msgStorageNotWritable  = "Storage not writable"

	// The fixed 500 message of each route (§1.1): what failed, never why.
	msgSubmitFailed       = "Build submission failed"
	msgCancelFailed       = "Cancel failed"
	msgRetryFailed        = "Retry failed"
	msgReadResultFailed   = "Failed to read build result"
	msgReadSourceFailed   = "Failed to read source file"
	msgReadCertsFailed    = "Failed to read certs file"
	msgCertsSecureFailed  = "Failed to process certs file"
	msgRegisterFailed     = "Worker registration failed"
	msgPollFailed         = "Poll failed"
	msgAddLogFailed       = "Failed to add log"
	msgHeartbeatFailed    = "Heartbeat failed"
	msgTelemetryFailed    = "Telemetry failed"
	msgUploadFailed       = "Upload failed"
	msgAbandonFailed      = "Abandon failed"
	msgAuthenticateFailed = "Authentication failed"
	msgVMReadyFailed      = "VM ready failed"
	msgVMStatusFailed     = "VM status failed"
	msgUnregisterFailed   = "Unregister failed"
	msgWorkerStatsFailed  = "Failed to fetch stats"
	msgSaveDiagFailed     = "Failed to save diagnostic report"
	msgFetchDiagFailed    = "Failed to fetch diagnostic reports"
)
