import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'scratch/', '.sotalk/', 'coverage/', 'test-artifacts/', 'web/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', performance: 'readonly', fetch: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // client/ runs in browsers and Node alike: only the globals both have
    files: ['client/**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        ['crypto', 'URLSearchParams', 'AbortSignal', 'TextEncoder', 'TextDecoder', 'setInterval', 'clearInterval', 'queueMicrotask', 'Response'].map((name) => [name, 'readonly']),
      ),
    },
  },
);
