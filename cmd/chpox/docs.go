package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Completion scripts ask chpox itself what may follow (urfave/cli's
// --generate-bash-completion), so they stay true to the commands and flags.
const bashCompletion = `# bash completion for chpox: source <(chpox completion bash)
_chpox_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
  return 0
}
complete -o default -F _chpox_complete chpox
`

const zshCompletion = `#compdef chpox
# zsh completion for chpox: source <(chpox completion zsh)
_chpox() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _chpox chpox
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "SHELL",
		Description: "bash: source <(chpox completion bash), or write it to /etc/bash_completion.d/chpox\n" +
			"zsh:  source <(chpox completion zsh)\nfish: chpox completion fish > ~/.config/fish/completions/chpox.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: completion takes one shell name: bash, zsh or fish", errUsage)
			}
			var script string
			switch c.Args().First() {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				var err error
				if script, err = c.App.ToFishCompletion(); err != nil {
					return fmt.Errorf("completion: %w", err)
				}
			default:
				return fmt.Errorf("%w: no completion for shell %q (bash, zsh or fish)", errUsage, c.Args().First())
			}
			_, err := fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}

// manCommand prints the manual page, generated from the command line's own
// definition (docs/chpox.1 is its output: make man).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := manPage(c.App)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}

// manPage is the app's man page without the build's version, so the
// committed page does not change with every commit.
func manPage(app *cli.App) (string, error) {
	app.Setup() // adds --help and --version, as a run does
	saved := app.Version
	app.Version = ""
	defer func() { app.Version = saved }()
	page, err := app.ToManWithSection(1)
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	return strings.TrimLeft(page, "\n"), nil
}
