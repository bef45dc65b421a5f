package main

import (
	"github.com/spf13/cobra"
)

func init() { register(newCompletionCmd) }

func newCompletionCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "print the shell completion script for bash, zsh or fish",
		Long: `Prints the completion script of iha for the shell named: commands, flags, -o formats,
-c names, and host names and controller ids asked from the API (IHA_ADDR, IHA_TOKEN or
IHA_TOKEN_FILE; two seconds at most, nothing when it does not answer).

The iha package installs the scripts where each shell finds them (bash-completion, zsh's
site-functions or vendor-completions, fish's vendor_completions.d); these commands are for a
binary installed by hand.

Exit status: 0 ok; 2 usage.`,
		Example: `  source <(iha completion bash)                                  # this bash session
  iha completion bash > /etc/bash_completion.d/iha                # every bash session
  iha completion zsh > "${fpath[1]}/_iha"                          # zsh (compinit)
  iha completion fish > ~/.config/fish/completions/iha.fish       # fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("name one shell: bash, zsh or fish")
			}
			switch args[0] {
			case "bash", "zsh", "fish":
				return nil
			}
			return usagef("%q: want bash, zsh or fish", args[0])
		},
		DisableFlagsInUseLine: true,
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		root := cmd.Root()
		switch args[0] {
		case "bash":
			return root.GenBashCompletionV2(e.stdout, true)
		case "zsh":
			return root.GenZshCompletion(e.stdout)
		default:
			return root.GenFishCompletion(e.stdout, true)
		}
	}
	return cmd
}
