-- Commands are created by require("runforge").setup({...}); see editors/nvim/README.md.
if vim.g.loaded_runforge then
  return
end
vim.g.loaded_runforge = true
