#!/usr/bin/env node
// A command-line face for solc-js that py-solc-x, ape-solidity and slither can call as if
// it were a native solc. It compiles in-process and lets node exit on its own: solc-js's
// own CLI calls process.exit() right after writing, which truncates piped output at 64 KiB.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

function parseArgs(argv) {
  const options = { basePath: null, includePaths: [], standardJson: false, version: false };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, inlineValue] = argv[i].split(/=(.*)/s, 2);
    const value = () => (inlineValue !== undefined ? inlineValue : argv[++i]);
    if (flag === '--version') options.version = true;
    else if (flag === '--standard-json') options.standardJson = true;
    else if (flag === '--base-path') options.basePath = value();
    else if (flag === '--include-path') options.includePaths.push(value());
    else if (flag === '--allow-paths') value();
    else throw new Error(`unsupported solc flag ${argv[i]}: this wrapper speaks --standard-json`);
  }
  return options;
}

function resolver(roots) {
  return (importPath) => {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : roots.map((root) => path.resolve(root, importPath));
    for (const candidate of candidates) {
      if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, 'utf8') };
    }
    return { error: `File not found: ${importPath} (looked in ${roots.join(', ')})` };
  };
}

function inlineUrls(input, findImport) {
  for (const [name, source] of Object.entries(input.sources || {})) {
    if (source.content !== undefined || !Array.isArray(source.urls)) continue;
    const found = source.urls.map(findImport).find((answer) => answer.contents !== undefined);
    if (found) input.sources[name] = { content: found.contents };
  }
  return input;
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  if (options.version) {
    process.stdout.write(
      `solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`,
    );
    return;
  }
  if (!options.standardJson) throw new Error('pass --standard-json (or --version)');

  const roots = [options.basePath || process.cwd(), ...options.includePaths, process.cwd()];
  const findImport = resolver(roots);
  const input = inlineUrls(JSON.parse(fs.readFileSync(0, 'utf8')), findImport);
  process.stdout.write(solc.compile(JSON.stringify(input), { import: findImport }));
}

main();
