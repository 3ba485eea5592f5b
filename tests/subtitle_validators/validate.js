#!/usr/bin/env node
// Strict validation of subtitle files: node validate.js <file.srt|file.vtt>...
// Prints every error of every invalid file and exits 1; exits 0 when all are
// valid, 2 on a usage error. The format is taken from the file's extension.
"use strict";

const fs = require("fs");
const path = require("path");
const srtValidator = require("srt-validator");
const { WebVTTParser } = require("webvtt-parser");

// A file that is not UTF-8 is refused before any parsing: both formats are
// delivered as UTF-8, and a lenient decode would hide mangled text.
function decodeUtf8(buffer) {
  return new TextDecoder("utf-8", { fatal: true }).decode(buffer);
}

function validateSrt(text) {
  // srt-validator's parser demands at least one cue, but a SubRip file of
  // zero subtitles is simply empty (SRT has no header): that is the one
  // thing accepted here without it.
  if (text.trim() === "") return [];
  const errors = srtValidator.default(text).map(
    (e) => `line ${e.lineNumber}: ${e.message || e.errorCode}`,
  );
  if (errors.length) return errors;
  // srt-validator reads every line up to a blank one as caption text, so a
  // missing blank line silently swallows the next cue (its number and timing
  // become text). A timing arrow inside caption text is that mistake.
  for (const cue of srtValidator.parser.parse(text)) {
    cue.text.split("\n").forEach((line, offset) => {
      if (line.includes("-->")) {
        errors.push(
          `line ${cue.lineNumbers.text + offset + 1}: "-->" inside caption text (missing blank line before a cue?)`,
        );
      }
    });
  }
  return errors;
}

function validateVtt(text) {
  // Not "metadata" mode: that mode silences cue-text errors (bad escapes such
  // as a bare "&" or "<", unknown tags), which are exactly what a subtitle
  // writer can get wrong. Every other error is reported in both modes.
  const result = new WebVTTParser().parse(text, "subtitles");
  return result.errors.map((e) => `line ${e.line}, col ${e.col}: ${e.message}`);
}

const VALIDATORS = { ".srt": validateSrt, ".vtt": validateVtt };

function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate.js <file.srt|file.vtt>...");
    return 2;
  }
  let failed = false;
  for (const file of files) {
    const validate = VALIDATORS[path.extname(file).toLowerCase()];
    if (!validate) {
      console.error(`${file}: unknown subtitle format (expected .srt or .vtt)`);
      return 2;
    }
    let errors;
    try {
      errors = validate(decodeUtf8(fs.readFileSync(file)));
    } catch (error) {
      errors = [error.message];
    }
    if (errors.length) {
      failed = true;
      console.error(`${file}: INVALID`);
      for (const message of errors) console.error(`  ${message}`);
    } else {
      console.log(`${file}: valid`);
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
