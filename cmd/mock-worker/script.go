package main

import "fmt"

// buildScript returns the fake log of a build, in order, each line tagged
// with the stage the telemetry reports while it is current. A failing build
// stops two thirds of the way through with error lines; the second result is
// then the error_message to upload.
func buildScript(platform string, sourceSize int64, hasCerts, success bool, resultSize int64) ([]logLine, string) {
	info := func(stage, format string, args ...any) logLine {
		return logLine{Level: "info", Message: fmt.Sprintf(format, args...), stage: stage}
	}
	warn := func(stage, format string, args ...any) logLine {
		return logLine{Level: "warn", Message: fmt.Sprintf(format, args...), stage: stage}
	}
	lines := []logLine{
		info("preparing", "Mock build environment ready (no VM: this is the Linux mock worker)"),
		info("preparing", "Extracting source archive (%s)", humanSize(sourceSize)),
		info("preparing", "Node v20.11.0, npm 10.2.4, expo 51.0.8"),
		info("installing_dependencies", "Installing dependencies…"),
		info("installing_dependencies", "added 1287 packages, and audited 1288 packages in 14s"),
		warn("installing_dependencies", "npm warn deprecated inflight@1.0.6: This module is not supported"),
		info("prebuild", "Running expo prebuild --platform %s --no-install", platform),
		info("prebuild", "✔ Created native project | gitignored"),
	}
	var tail []logLine
	var errLines []logLine
	var failure string
	if platform == "ios" {
		signing := info("signing", "No signing certificates supplied; building unsigned (mock)")
		if hasCerts {
			signing = info("signing", "Imported signing certificate into the build keychain")
		}
		lines = append(lines,
			info("pods", "Installing CocoaPods dependencies…"),
			info("pods", "Pod installation complete! There are 84 dependencies from the Podfile and 97 total pods installed."),
			signing,
			info("compiling", "Compiling… xcodebuild -workspace ios/App.xcworkspace -scheme App -configuration Release"),
			info("compiling", "CompileC React-Core (142 files)"),
			info("compiling", "CompileC hermes-engine"),
			info("compiling", "CompileSwift normal arm64 AppDelegate.swift"),
		)
		tail = []logLine{
			warn("compiling", "ld: warning: ignoring duplicate libraries: '-lc++'"),
			info("compiling", "Linking App"),
			info("archiving", "Archiving App.xcarchive"),
			info("archiving", "** ARCHIVE SUCCEEDED **"),
			info("exporting", "Exporting build.ipa"),
			info("exporting", "Build artifact: build.ipa (%s)", humanSize(resultSize)),
		}
		failure = "Command PhaseScriptExecution failed with a nonzero exit code (simulated by --fail-rate)"
		errLines = []logLine{
			{Level: "error", Message: "error: " + failure, stage: "compiling"},
			{Level: "error", Message: "** ARCHIVE FAILED **", stage: "compiling"},
		}
	} else {
		lines = append(lines,
			info("compiling", "Compiling… ./gradlew assembleRelease"),
			info("compiling", "Starting a Gradle Daemon (subsequent builds will be faster)"),
			info("compiling", "> Task :app:preBuild UP-TO-DATE"),
			info("compiling", "> Task :app:mergeReleaseResources"),
			info("compiling", "> Task :app:compileReleaseKotlin"),
		)
		tail = []logLine{
			warn("compiling", "w: Parameter 'context' is never used"),
			info("compiling", "> Task :app:createBundleReleaseJsAndAssets"),
			info("packaging", "> Task :app:packageRelease"),
			info("packaging", "BUILD SUCCESSFUL in 2m 14s"),
			info("packaging", "Build artifact: build.apk (%s)", humanSize(resultSize)),
		}
		failure = "Execution failed for task ':app:compileReleaseKotlin' (simulated by --fail-rate)"
		errLines = []logLine{
			{Level: "error", Message: "FAILURE: Build failed with an exception.", stage: "compiling"},
			{Level: "error", Message: failure, stage: "compiling"},
		}
	}
	if success {
		return append(lines, tail...), ""
	}
	return append(lines, errLines...), failure
}
