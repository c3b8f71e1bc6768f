// The package's command line: `azure-keyvault-pkcs11 <subcommand> [options]`.
import { runAgentCommand } from "../agent/command.ts";
import { runDoctorCommand } from "../doctor/command.ts";
import { runListCommand } from "../doctor/list.ts";
import { runEmulatorCli } from "../emulator/cli.ts";

const USAGE = `usage: azure-keyvault-pkcs11 <command> [options]

commands:
  agent      run the shared signing agent in the foreground (see --help)
  doctor     check everything that can make signing fail, with the fix for each problem (--json)
  list       list the tokens and objects the module shows, with their PKCS#11 URIs (--json)
  emulator   run the Azure Key Vault emulator (see --help)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "agent":
      return runAgentCommand(rest);
    case "emulator":
      return runEmulatorCli(rest);
    case "doctor":
      return runDoctorCommand(rest);
    case "list":
      return runListCommand(rest);
    case undefined:
    case "-h":
    case "--help":
      process.stderr.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`azure-keyvault-pkcs11: unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`azure-keyvault-pkcs11: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
