#!/usr/bin/env node
// Compiles contracts/src/*.sol with the pinned solcjs (package.json) into contracts/out/<Name>.json
// ({abi, bytecode:{object}, deployedBytecode:{object}}), the artifacts the Rust bindings read.
// `node build.js --check` compiles in memory and exits 1 if contracts/out is stale.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const CONTRACTS = ['AIConfig', 'WorkerRegistry', 'JobRegistry', 'SessionManager', 'ReputationRegistry'];
const here = __dirname;
const srcDir = path.join(here, 'src');
const outDir = path.join(here, 'out');
const check = process.argv.includes('--check');

const sources = {};
for (const f of fs.readdirSync(srcDir).filter((f) => f.endsWith('.sol')).sort()) {
  // Source unit names are relative so that bytecode metadata is the same on every machine.
  sources[`src/${f}`] = { content: fs.readFileSync(path.join(srcDir, f), 'utf8') };
}
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    viaIR: true,
    evmVersion: 'prague',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
if (errors.length > 0) process.exit(2);

let stale = [];
if (!check) fs.mkdirSync(outDir, { recursive: true });
for (const name of CONTRACTS) {
  const c = output.contracts[`src/${name}.sol`][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    abi: c.abi,
    bytecode: { object: '0x' + c.evm.bytecode.object },
    deployedBytecode: { object: '0x' + c.evm.deployedBytecode.object },
  };
  const text = JSON.stringify(artifact, null, 2) + '\n';
  const file = path.join(outDir, `${name}.json`);
  const size = c.evm.deployedBytecode.object.length / 2;
  if (check) {
    const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (current !== text) stale.push(name);
  } else {
    fs.writeFileSync(file, text);
  }
  process.stderr.write(`${name}: runtime ${size} bytes${size > 24576 ? ' (OVER the EIP-170 limit)' : ''}\n`);
}
if (check && stale.length > 0) {
  process.stderr.write(`contracts/out is stale for: ${stale.join(', ')}; run \`make contracts\` and commit contracts/out\n`);
  process.exit(1);
}
